#pragma once
// Finds a tokenizer.json's added tokens (<|im_start|>, <|begin_of_text|>, ...) written literally in
// text, so that they become single ids and never reach the pre-tokenizer. Private to
// framework/src.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvlab::bpe {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;       // also swallow the whitespace before it
  bool rstrip = false;       // also swallow the whitespace after it
  bool single_word = false;  // only where no letter or digit touches it
  bool normalized = false;   // matched after the normalizer rather than on the raw text
};

class AddedTokenMatcher {
 public:
  void add(const AddedToken& token);
  bool empty() const { return tokens_.empty(); }

  // One piece of a split: text (id < 0) or an added token.
  struct Piece {
    std::string_view text;
    int32_t id;
  };

  // Splits text at the added tokens, leftmost first and longest at a position. Text pieces are
  // never empty.
  void split(std::string_view text, std::vector<Piece>& out) const;

 private:
  // A byte trie over the token contents. Edges live in one hash map keyed by (node, byte).
  int32_t child(int32_t node, uint8_t byte) const;

  std::vector<AddedToken> tokens_;
  std::vector<int32_t> terminal_;  // per trie node: index into tokens_, or -1
  std::unordered_map<uint64_t, int32_t> edges_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace kvlab::bpe
