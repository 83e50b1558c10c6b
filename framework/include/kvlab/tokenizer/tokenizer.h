#pragma once
// One interface over the tokenizers a checkpoint may carry:
//   - SentencePiece  (tokenizer.model; Llama-2, Mistral)          -> SentencePieceTokenizer
//   - HF byte-level BPE (tokenizer.json; Llama-3, Qwen2)           -> BpeTokenizer
//   - llama2.c scored vocabulary (llama2c_tokenizer.bin)            -> Llama2cTokenizer
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes text. With add_special, the tokenizer adds what its own format adds by default
  // (SentencePiece Llama: BOS; a tokenizer.json post-processor's template, e.g. Llama-3's
  // <|begin_of_text|>; Qwen2: nothing), exactly as HF's encode(add_special_tokens=True) would.
  // Special/added tokens written literally in the text are recognised as single ids.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = false) const = 0;

  // Decodes ids back to UTF-8 text. With skip_special, special/added-special tokens are dropped.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  virtual int32_t vocab_size() const = 0;               // including added tokens
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::string kind() const = 0;                 // "sentencepiece", "bpe", ...
};

// Picks the tokenizer a checkpoint directory carries: tokenizer.model (SentencePiece) first, then
// tokenizer.json (HF BPE); or the one a GGUF file's metadata describes. Throws kvlab::Error naming
// the directory if it holds neither.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

}  // namespace kvlab
