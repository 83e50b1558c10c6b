#pragma once
// tokenizer.model (Llama-2, Mistral) through libsentencepiece.
#include <string>
#include <vector>

#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& model_path);  // throws naming the file
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override;
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> eos_id() const override;
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::string path_;
  void* handle_ = nullptr;  // sentencepiece::SentencePieceProcessor inside the shim
};

// Trains a BPE SentencePiece model with byte fallback on `text_path` and writes <out_prefix>.model.
// Ids: 0 <unk>, 1 <s>, 2 </s> (the Llama convention). vocab_size counts everything.
void train_sentencepiece(const std::string& text_path, const std::string& out_prefix, int vocab_size);

}  // namespace kvlab
