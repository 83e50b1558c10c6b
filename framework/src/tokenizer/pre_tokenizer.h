#pragma once
// The pre-tokenizer of a byte-level BPE tokenizer.json: the Split steps and the final ByteLevel
// step that cut normalized text into the words BPE encodes one by one. Private to framework/src.
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "split_patterns.h"

namespace kvlab::bpe {

// What a Split step does with the pattern's matches (HF's SplitDelimiterBehavior).
enum class SplitBehavior {
  kRemoved,             // drop them
  kIsolated,            // make each its own piece
  kMergedWithPrevious,  // glue each to the piece before it
  kMergedWithNext,      // glue each to the piece after it
  kContiguous,          // make each run of adjacent matches one piece
};

// The behavior named as tokenizer.json spells it ("Isolated", ...), if there is one.
std::optional<SplitBehavior> parse_split_behavior(std::string_view name);

struct PreTokenizerStep {
  enum Kind { kSplitPattern, kSplitString, kByteLevel } kind = kByteLevel;
  SplitPattern pattern = SplitPattern::kGpt2;  // kSplitPattern, and kByteLevel with use_regex
  std::string literal;                         // kSplitString: the exact text to split at
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;            // Split: the pieces between matches count as the matches
  bool add_prefix_space = false;  // ByteLevel: put a space before a piece not starting with one
  bool use_regex = false;         // ByteLevel: also split with GPT-2's pattern
};

// Appends to `out` the pieces a Split step with these matches makes of `text`, as HF's
// NormalizedString::split does; empty pieces are dropped.
void split_by_matches(std::string_view text, const std::vector<Match>& matches, SplitBehavior behavior,
                      bool invert, std::vector<std::string_view>& out);

class PreTokenizer {
 public:
  void add(PreTokenizerStep step) { steps_.push_back(std::move(step)); }
  const std::vector<PreTokenizerStep>& steps() const { return steps_; }

  // Calls word(w) for every word of `text`, in order. Words are raw bytes (ByteLevel's byte to
  // character mapping is left to the vocabulary, which is stored as raw bytes) and never empty.
  void run(std::string_view text, const std::function<void(std::string_view)>& word) const {
    run_from(0, text, word);
  }

 private:
  void run_from(size_t step, std::string_view piece, const std::function<void(std::string_view)>& word) const;

  std::vector<PreTokenizerStep> steps_;
};

}  // namespace kvlab::bpe
