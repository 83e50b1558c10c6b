#pragma once
// Llama-family models from GGUF files (architectures `llama`, also used by Mistral-style models,
// and `qwen2`): the architecture from `<arch>.*` metadata, the weights from GGUF tensor names
// (blk.N.attn_q -> layer N q_proj, ..., token_embd, output_norm, output or tied embeddings), the
// tokenizer from `tokenizer.ggml.*` metadata, and a converter to an HF checkpoint folder.
//
// llama.cpp stores the Q and K projections of the `llama` architecture with the rows of each head
// permuted for its adjacent-pair RoPE; they are permuted back to HF's half-split layout (what the
// runtime's RoPE rotates), as transformers does when it loads a GGUF.
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "kvlab/model/gguf_file.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/model/model_config.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

// The architecture from metadata. Throws naming the file and key (an unsupported architecture,
// partial rotary dimensions, an unsupported RoPE scaling, ...).
ModelConfig gguf_model_config(const GgufFile& f);

// Every weight, dequantized into `opt.dtype` on `opt.device`, after checking each tensor's shape
// against the metadata (a mismatch names the tensor and both shapes).
LlamaModel load_gguf_model(const GgufFile& f, const LoadOptions& opt = {});
LlamaModel load_gguf_model(const std::string& path, const LoadOptions& opt = {});

// The tokenizer the metadata describes: tokenizer.ggml.model `gpt2` (byte-level BPE, through the
// tokenizer.json reader with the pre-tokenizer that tokenizer.ggml.pre names: gpt2, smollm,
// llama-bpe, qwen2 and the vocabularies that share their splits) or `llama` (SentencePiece-style
// scored vocabulary with byte fallback). Anything else is refused by name.
std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufFile& f);
// Writes the vocabulary as an HF checkpoint holds it into out_dir: tokenizer.json (gpt2) or
// tokenizer.model (llama), and tokenizer_config.json with the chat template (convert gguf).
void write_gguf_tokenizer_files(const GgufFile& f, const std::string& out_dir);

// HF tokenizer.json / tokenizer_config.json content equivalent to a `gpt2` vocabulary (what
// gguf_tokenizer reads and `convert gguf` writes). The config carries bos/eos, add_bos/add_eos
// and tokenizer.chat_template.
nlohmann::json gguf_tokenizer_json(const GgufFile& f);
nlohmann::json gguf_tokenizer_config(const GgufFile& f);

// tokenizer.chat_template, or "" when the file has none.
std::string gguf_chat_template(const GgufFile& f);

// Writes a complete HF checkpoint into out_dir: config.json, model.safetensors (weights in
// `dtype`), the tokenizer (tokenizer.json for `gpt2` vocabularies, a SentencePiece
// tokenizer.model for `llama` ones), tokenizer_config.json with the chat template, and
// generation_config.json. Returns the config.
ModelConfig convert_gguf(const std::string& gguf_path, const std::string& out_dir, c10::ScalarType dtype);

}  // namespace kvlab
