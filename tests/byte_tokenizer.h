#pragma once
// Bytes as tokens: a tokenizer whose ids are the text's bytes, so a test can compute by hand what
// any prompt becomes. No special tokens, no dummy prefix.
#include <string>
#include <vector>

#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::test {

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    std::vector<int32_t> out;
    for (unsigned char c : text) out.push_back(c);
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override { return std::string(ids.begin(), ids.end()); }
  int32_t vocab_size() const override { return 256; }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  std::string kind() const override { return "bytes"; }
};

}  // namespace kvlab::test
