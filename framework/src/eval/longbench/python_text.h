#pragma once
// Python's str semantics, as far as the LongBench scorer uses them: text is a sequence of code
// points; str.lower() (full case mapping, final sigma), str.isspace() / str.split(), and the
// regex classes \w (isalnum or '_') and \d (isdecimal) of re on str. The tables come from the
// Python that made the scorer fixtures (scripts/gen_python_text_tables.py). Private to the scorer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::pytext {

struct CodeRange {
  uint32_t lo, hi;
};
struct LowerEntry {
  uint32_t cp;
  uint32_t lower[3];  // 0-padded
};
struct SigmaRange {
  uint32_t lo, hi;
  uint8_t cls;  // 1: case-ignorable, 2: cased (not case-ignorable)
};

// Generated tables (python_text_tables.cpp).
extern const CodeRange kSpaceRanges[];
extern const size_t kSpaceRangesCount;
extern const CodeRange kAlnumRanges[];
extern const size_t kAlnumRangesCount;
extern const CodeRange kDecimalRanges[];
extern const size_t kDecimalRangesCount;
extern const LowerEntry kLowerMap[];
extern const size_t kLowerMapCount;
extern const SigmaRange kSigmaRanges[];
extern const size_t kSigmaRangeCount;

using Text = std::u32string;

Text decode(std::string_view utf8);  // invalid bytes become U+FFFD
std::string encode(const Text& text);

bool is_space(char32_t c);    // str.isspace()
bool is_alnum(char32_t c);    // str.isalnum()
bool is_decimal(char32_t c);  // str.isdecimal(), re's \d
inline bool is_word(char32_t c) { return c == U'_' || is_alnum(c); }  // re's \w

Text lower(const Text& s);                               // str.lower()
std::vector<Text> split_whitespace(const Text& s);       // str.split()
std::vector<Text> split(const Text& s, char32_t sep);    // str.split(sep)
Text join(const std::vector<Text>& parts, const Text& sep);
Text lstrip(const Text& s, char32_t c);                  // str.lstrip(c)
bool contains(const Text& haystack, const Text& needle); // needle in haystack

}  // namespace kvlab::pytext
