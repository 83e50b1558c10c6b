#pragma once
// Import of llama2.c checkpoints (the "legacy" export: seven int32 dims, then float32 arrays) into a
// standard HF-format directory: config.json (model_type llama), model.safetensors with HF names and
// HF's half-split RoPE layout, and the tokenizer as llama2c_tokenizer.bin.
#include <cstdint>
#include <string>

#include "kvlab/model/model_config.h"

namespace kvlab {

struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
  bool shared_classifier;  // vocab_size was positive in the file
};

// Reads and validates the header against the file size. Throws naming the file.
Llama2cHeader read_llama2c_header(const std::string& model_path);

// Writes the converted checkpoint into out_dir; returns its config.
ModelConfig convert_llama2c(const std::string& model_path, const std::string& tokenizer_path,
                            const std::string& out_dir);

}  // namespace kvlab
