#pragma once
// The regular expressions byte-level BPE tokenizers split text with, matched by hand.
//
// tokenizer.json names its split regex as text (Oniguruma syntax, with \p{L}, \p{N}, (?i:...) and
// a lookahead), which std::regex cannot run. The patterns in use are few and fixed, so each known
// one is recognised by its exact text and matched by code that follows its alternation
// (leftmost alternative first, with the backtracking the regex engine would do). Private to
// framework/src.
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

namespace kvlab::bpe {

enum class SplitPattern {
  kGpt2,    // GPT-2, and ByteLevel's built-in pattern (use_regex: true)
  kLlama3,  // Llama-3 (= OpenAI cl100k): numbers in runs of up to three digits
  kQwen2,   // Qwen2/2.5/3: like Llama-3, but single digits
  kDigits,  // \p{N}: every numeric character (HF's Digits pre-tokenizer, llama.cpp's first
            // split for SmolLM / StarCoder vocabularies)
};

// The pattern whose regex is exactly `regex`, if it is one of the known ones.
std::optional<SplitPattern> find_split_pattern(std::string_view regex);

// The regex text of a known pattern (as tokenizer.json spells it, after JSON unescaping).
std::string_view split_pattern_regex(SplitPattern pattern);

// A match as byte offsets [start, end) into the text.
struct Match {
  size_t start, end;
};

// Appends to `out` the matches of `pattern` in `text`, left to right and non-overlapping, as the
// regex engine's find-all would return them (none is empty). Invalid UTF-8 bytes count as single
// characters outside \p{L}, \p{N} and \s.
void find_matches(SplitPattern pattern, std::string_view text, std::vector<Match>& out);

}  // namespace kvlab::bpe
