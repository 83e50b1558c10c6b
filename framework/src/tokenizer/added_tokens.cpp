#include "added_tokens.h"

#include "unicode.h"

namespace kvlab::bpe {

namespace {

using unicode::CharClass;

// The code point that ends just before byte `end`, and its start; kInvalid if none is valid.
uint32_t code_point_before(std::string_view s, size_t end, size_t* start) {
  size_t b = end;
  // Step back over at most three continuation bytes to the lead byte.
  while (b > 0 && end - b < 4) {
    --b;
    if ((static_cast<uint8_t>(s[b]) & 0xC0) != 0x80) break;
  }
  size_t pos = b;
  const uint32_t cp = unicode::decode_utf8(s, pos);
  if (pos != end) {
    *start = end - 1;
    return unicode::kInvalid;
  }
  *start = b;
  return cp;
}

}  // namespace

int32_t AddedTokenMatcher::child(int32_t node, uint8_t byte) const {
  const auto it = edges_.find((static_cast<uint64_t>(node) << 8) | byte);
  return it == edges_.end() ? -1 : it->second;
}

void AddedTokenMatcher::add(const AddedToken& token) {
  if (token.content.empty()) return;  // would match everywhere; HF never matches it either
  if (terminal_.empty()) terminal_.push_back(-1);  // the root
  int32_t node = 0;
  for (char ch : token.content) {
    const auto byte = static_cast<uint8_t>(ch);
    int32_t next = child(node, byte);
    if (next < 0) {
      next = static_cast<int32_t>(terminal_.size());
      terminal_.push_back(-1);
      edges_.emplace((static_cast<uint64_t>(node) << 8) | byte, next);
    }
    node = next;
  }
  // A repeated content keeps the later entry, like a map keyed by content would.
  terminal_[node] = static_cast<int32_t>(tokens_.size());
  tokens_.push_back(token);
  first_byte_[static_cast<uint8_t>(token.content[0])] = true;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Piece>& out) const {
  if (tokens_.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return;
  }
  size_t emitted = 0;  // text before this is already in `out`
  for (size_t i = 0; i < text.size(); ++i) {
    if (!first_byte_[static_cast<uint8_t>(text[i])]) continue;
    // Leftmost-longest: the longest token that starts here.
    int32_t node = 0, found = -1;
    for (size_t k = i; k < text.size(); ++k) {
      node = child(node, static_cast<uint8_t>(text[k]));
      if (node < 0) break;
      if (terminal_[node] >= 0) found = terminal_[node];
    }
    if (found < 0) continue;
    const AddedToken& token = tokens_[found];
    size_t start = i, end = i + token.content.size();
    i = end - 1;  // the loop's ++i resumes right after the match
    if (token.single_word) {
      // Like HF, a match touching a word character is dropped, and scanning resumes after it.
      size_t before = 0, after = end;
      if (start > 0 && unicode::is_word_char(code_point_before(text, start, &before))) continue;
      if (end < text.size() && unicode::is_word_char(unicode::decode_utf8(text, after))) continue;
    }
    if (token.lstrip) {
      size_t prev = start;
      while (start > emitted && unicode::char_class(code_point_before(text, start, &prev)) == CharClass::kSpace &&
             prev >= emitted)
        start = prev;
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t next = end;
        if (unicode::char_class(unicode::decode_utf8(text, next)) != CharClass::kSpace) break;
        end = next;
      }
      i = end - 1;
    }
    if (start > emitted) out.push_back({text.substr(emitted, start - emitted), -1});
    out.push_back({text.substr(start, end - start), token.id});
    emitted = end;
  }
  if (emitted < text.size()) out.push_back({text.substr(emitted), -1});
}

}  // namespace kvlab::bpe
