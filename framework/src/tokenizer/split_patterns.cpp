#include "split_patterns.h"

#include <cstdint>

#include "unicode.h"

namespace kvlab::bpe {

namespace {

using unicode::CharClass;

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kDigitsRegex = R"(\p{N})";

struct Char {
  uint32_t cp;
  CharClass cls;
  uint32_t offset;  // byte offset in the text
};

// The decoded text plus the alternatives of one pattern. Positions are character indices;
// at(i) past the end reads as a character of no class, so look-ahead needs no bounds checks.
class Matcher {
 public:
  Matcher(SplitPattern pattern, const std::vector<Char>& chars) : p_(pattern), c_(chars), n_(chars.size()) {}

  // End of the match that starts at i, or i when no alternative matches there.
  size_t match(size_t i) const {
    if (p_ == SplitPattern::kDigits) return is(i, CharClass::kNumber) ? i + 1 : i;
    const bool gpt2 = p_ == SplitPattern::kGpt2;
    if (size_t e = contraction(i, /*ignore_case=*/!gpt2); e != i) return e;
    if (gpt2) {
      if (size_t e = space_then_run(i, CharClass::kLetter); e != i) return e;     //  ?\p{L}+
      if (size_t e = space_then_run(i, CharClass::kNumber); e != i) return e;     //  ?\p{N}+
      if (size_t e = space_then_run(i, CharClass::kOther); e != i) return e;      //  ?[^\s\p{L}\p{N}]+
    } else {
      // [^\r\n\p{L}\p{N}]?\p{L}+
      if (is(i, CharClass::kLetter)) return run(i, CharClass::kLetter);
      if ((is(i, CharClass::kOther) || is(i, CharClass::kSpace)) && !newline(i) && is(i + 1, CharClass::kLetter))
        return run(i + 1, CharClass::kLetter);
      // \p{N}{1,3} or \p{N}
      if (is(i, CharClass::kNumber)) {
        const size_t max_digits = p_ == SplitPattern::kLlama3 ? 3 : 1;
        size_t e = i;
        while (e - i < max_digits && is(e, CharClass::kNumber)) ++e;
        return e;
      }
      //  ?[^\s\p{L}\p{N}]+[\r\n]*
      if (size_t e = space_then_run(i, CharClass::kOther); e != i) {
        while (newline(e)) ++e;
        return e;
      }
      // \s*[\r\n]+ : the greedy \s* gives back characters until a newline follows, so the
      // match ends just after the last newline of the whitespace run.
      if (is(i, CharClass::kSpace)) {
        const size_t end = run(i, CharClass::kSpace);
        for (size_t k = end; k > i; --k) {
          if (newline(k - 1)) return k;
        }
      }
    }
    if (is(i, CharClass::kSpace)) {
      const size_t end = run(i, CharClass::kSpace);
      // \s+(?!\S): the whole run at the end of the text, else all but its last character
      // (which then starts the next piece, e.g. the space of " word")...
      if (end == n_) return end;
      if (end - i >= 2) return end - 1;
      return end;  // ... and \s+ for a single whitespace character before a non-space
    }
    return i;
  }

 private:
  bool is(size_t i, CharClass cls) const { return i < n_ && c_[i].cls == cls; }
  bool newline(size_t i) const { return i < n_ && (c_[i].cp == '\r' || c_[i].cp == '\n'); }
  uint32_t cp(size_t i) const { return i < n_ ? c_[i].cp : 0; }

  size_t run(size_t i, CharClass cls) const {
    while (is(i, cls)) ++i;
    return i;
  }

  // " ?X+": an optional U+0020 then a run of class X (the space only if X follows it).
  size_t space_then_run(size_t i, CharClass cls) const {
    if (is(i, cls)) return run(i, cls);
    if (cp(i) == ' ' && is(i + 1, cls)) return run(i + 1, cls);
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive. Under Unicode case folding the long s
  // U+017F matches 's' too; no other non-ASCII character folds to one of these letters.
  size_t contraction(size_t i, bool ignore_case) const {
    if (cp(i) != '\'') return i;
    const auto letter = [&](size_t k) -> uint32_t {
      const uint32_t c = cp(k);
      if (!ignore_case) return c;
      if (c >= 'A' && c <= 'Z') return c - 'A' + 'a';
      return c == 0x17F ? 's' : c;
    };
    const uint32_t a = letter(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const uint32_t b = letter(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
  }

  SplitPattern p_;
  const std::vector<Char>& c_;
  size_t n_;
};

}  // namespace

std::optional<SplitPattern> find_split_pattern(std::string_view regex) {
  for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kLlama3, SplitPattern::kQwen2, SplitPattern::kDigits}) {
    if (regex == split_pattern_regex(p)) return p;
  }
  return std::nullopt;
}

std::string_view split_pattern_regex(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::kGpt2: return kGpt2Regex;
    case SplitPattern::kLlama3: return kLlama3Regex;
    case SplitPattern::kQwen2: return kQwen2Regex;
    case SplitPattern::kDigits: return kDigitsRegex;
  }
  return {};
}

void find_matches(SplitPattern pattern, std::string_view text, std::vector<Match>& out) {
  thread_local std::vector<Char> chars;  // reused: encode calls this once per text segment
  chars.clear();
  for (size_t pos = 0; pos < text.size();) {
    const auto offset = static_cast<uint32_t>(pos);
    const uint32_t cp = unicode::decode_utf8(text, pos);
    chars.push_back({cp, unicode::char_class(cp), offset});
  }
  const auto offset_of = [&](size_t i) { return i < chars.size() ? chars[i].offset : text.size(); };
  const Matcher matcher(pattern, chars);
  for (size_t i = 0; i < chars.size();) {
    const size_t end = matcher.match(i);
    if (end == i) {
      ++i;  // no match starts here; the engine retries one character further on
      continue;
    }
    out.push_back({offset_of(i), offset_of(end)});
    i = end;
  }
}

}  // namespace kvlab::bpe
