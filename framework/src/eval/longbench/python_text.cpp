#include "python_text.h"

#include <algorithm>

#include "../../tokenizer/unicode.h"

namespace kvlab::pytext {
namespace {

template <typename Range>
const Range* find_range(const Range* ranges, size_t count, uint32_t cp) {
  const Range* end = ranges + count;
  const Range* it = std::upper_bound(ranges, end, cp, [](uint32_t v, const Range& r) { return v < r.lo; });
  if (it == ranges) return nullptr;
  --it;
  return cp <= it->hi ? it : nullptr;
}

uint8_t sigma_class(char32_t c) {
  const SigmaRange* r = find_range(kSigmaRanges, kSigmaRangeCount, static_cast<uint32_t>(c));
  return r ? r->cls : 0;
}

// CPython's rule for U+03A3: final sigma when preceded by a cased character and not followed by
// one, case-ignorable characters skipped on both sides.
char32_t lower_capital_sigma(const Text& s, size_t i) {
  size_t j = i;
  while (j > 0 && sigma_class(s[j - 1]) == 1) --j;
  bool final_sigma = j > 0 && sigma_class(s[j - 1]) == 2;
  if (final_sigma) {
    size_t k = i + 1;
    while (k < s.size() && sigma_class(s[k]) == 1) ++k;
    final_sigma = k == s.size() || sigma_class(s[k]) != 2;
  }
  return final_sigma ? U'\u03C2' : U'\u03C3';
}

}  // namespace

Text decode(std::string_view utf8) {
  Text out;
  out.reserve(utf8.size());
  size_t pos = 0;
  while (pos < utf8.size()) {
    const uint32_t cp = unicode::decode_utf8(utf8, pos);
    out.push_back(cp == unicode::kInvalid ? U'\uFFFD' : static_cast<char32_t>(cp));
  }
  return out;
}

std::string encode(const Text& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) unicode::append_utf8(out, static_cast<uint32_t>(c));
  return out;
}

bool is_space(char32_t c) { return find_range(kSpaceRanges, kSpaceRangesCount, static_cast<uint32_t>(c)) != nullptr; }
bool is_alnum(char32_t c) { return find_range(kAlnumRanges, kAlnumRangesCount, static_cast<uint32_t>(c)) != nullptr; }
bool is_decimal(char32_t c) {
  return find_range(kDecimalRanges, kDecimalRangesCount, static_cast<uint32_t>(c)) != nullptr;
}

Text lower(const Text& s) {
  Text out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c < 0x80) {
      out.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
      continue;
    }
    if (c == U'\u03A3') {
      out.push_back(lower_capital_sigma(s, i));
      continue;
    }
    const LowerEntry* end = kLowerMap + kLowerMapCount;
    const LowerEntry* it = std::lower_bound(kLowerMap, end, static_cast<uint32_t>(c),
                                            [](const LowerEntry& e, uint32_t v) { return e.cp < v; });
    if (it == end || it->cp != c) {
      out.push_back(c);
      continue;
    }
    for (uint32_t l : it->lower)
      if (l) out.push_back(static_cast<char32_t>(l));
  }
  return out;
}

std::vector<Text> split_whitespace(const Text& s) {
  std::vector<Text> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    if (i == s.size()) break;
    size_t j = i;
    while (j < s.size() && !is_space(s[j])) ++j;
    out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<Text> split(const Text& s, char32_t sep) {
  std::vector<Text> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.emplace_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

Text join(const std::vector<Text>& parts, const Text& sep) {
  Text out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

Text lstrip(const Text& s, char32_t c) {
  size_t i = 0;
  while (i < s.size() && s[i] == c) ++i;
  return s.substr(i);
}

bool contains(const Text& haystack, const Text& needle) { return haystack.find(needle) != Text::npos; }

}  // namespace kvlab::pytext
