#pragma once
// llama2.c's tokenizer format (tokenizer.bin, e.g. tok512.bin of the tinyllamas models), carried into
// converted checkpoints as `llama2c_tokenizer.bin`.
//   int32 max_token_length; then per token: float32 score, int32 byte length, the bytes.
// Ids 0, 1, 2 are <unk>, <s>, </s>; ids 3..258 are the bytes 0x00..0xFF ("<0xAB>", byte fallback).
// Encoding is SentencePiece-style BPE by score: a space is prepended to non-empty text, each UTF-8
// character becomes its piece (or its bytes' fallback ids), then the adjacent pair whose
// concatenation is the highest-scoring piece is merged, repeatedly, until no pair merges.
#include <string>
#include <unordered_map>
#include <vector>

#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

class Llama2cTokenizer : public Tokenizer {
 public:
  // vocab_size: the model's vocabulary (the file does not record it); <= 0 reads to end of file.
  explicit Llama2cTokenizer(const std::string& path, int32_t vocab_size = -1);

  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return 2; }
  std::string kind() const override { return "llama2c"; }

  const std::string& piece(int32_t id) const { return pieces_.at(static_cast<size_t>(id)); }
  float score(int32_t id) const { return scores_.at(static_cast<size_t>(id)); }

 private:
  std::string path_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int32_t> ids_;  // piece -> id (first id wins on duplicates)
};

}  // namespace kvlab
