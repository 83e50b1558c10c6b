#pragma once
// The Unicode the byte-level BPE tokenizer needs: UTF-8 decoding, the character classes of the
// pre-tokenizer patterns, NFC, and lossy UTF-8 repair for decoding. Private to framework/src.
// The classes follow Unicode 16.0 and NFC follows Unicode 9.0, the versions HF tokenizers uses
// for each (scripts/gen_unicode_tables.py explains).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvlab::unicode {

// \p{L}, \p{N}, \s (Oniguruma's Unicode \s) and everything else. The three named classes are
// disjoint, so one value per code point suffices.
enum class CharClass : uint8_t { kOther, kLetter, kNumber, kSpace };

struct ClassRange {
  uint32_t lo, hi;
  CharClass cls;
  uint8_t word;  // 1: a \w character (Rust regex: alphabetic, mark, Nd, Pc, join control)
};
struct CccRange {
  uint32_t lo, hi;
  uint8_t ccc;
};
struct CpRange {
  uint32_t lo, hi;
};
struct Decomposition {
  uint32_t cp, first, second;  // second == 0: singleton
  uint8_t composes;            // 1: (first, second) recomposes to cp under NFC
};

// Generated tables (unicode_categories.cpp, unicode_nfc_tables.cpp).
extern const ClassRange kClassRanges[];
extern const size_t kClassRangeCount;
extern const CccRange kCccRanges[];
extern const size_t kCccRangeCount;
extern const CpRange kNfcQcRanges[];
extern const size_t kNfcQcRangeCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;

// Returned for a byte that does not start a valid UTF-8 sequence (decode_utf8 then consumes one
// byte). Outside the code point range, so it is never confused with a real character.
constexpr uint32_t kInvalid = 0x110000;

// Decodes the code point at s[pos] and advances pos past it. Rejects overlong forms, surrogates
// and values above U+10FFFF (returning kInvalid and advancing by one byte).
uint32_t decode_utf8(std::string_view s, size_t& pos);

// Appends the UTF-8 form of cp (which must be a valid scalar value).
void append_utf8(std::string& out, uint32_t cp);

CharClass char_class(uint32_t cp);  // kOther for kInvalid
bool is_word_char(uint32_t cp);     // \w; false for kInvalid

uint8_t combining_class(uint32_t cp);

// Canonical composition (NFC) of s. Text that passes the NFC quick check (all ASCII text, and
// nearly all real text) is returned unchanged without being rebuilt. Invalid UTF-8 bytes are
// kept as they are and act as starters that compose with nothing.
std::string nfc(std::string_view s);

// Replaces each maximal invalid UTF-8 subsequence with U+FFFD (the Unicode "best practice", as
// Rust's String::from_utf8_lossy and Python's errors="replace" do).
std::string utf8_lossy(std::string_view bytes);

}  // namespace kvlab::unicode
