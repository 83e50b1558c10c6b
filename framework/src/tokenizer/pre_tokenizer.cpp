#include "pre_tokenizer.h"

#include <algorithm>

namespace kvlab::bpe {

std::optional<SplitBehavior> parse_split_behavior(std::string_view name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return std::nullopt;
}

void split_by_matches(std::string_view text, const std::vector<Match>& matches, SplitBehavior behavior,
                      bool invert, std::vector<std::string_view>& out) {
  // The text as alternating stretches: the matches and the gaps between them.
  struct Stretch {
    size_t start, end;
    bool match;
  };
  thread_local std::vector<Stretch> stretches, pieces;
  stretches.clear();
  pieces.clear();
  size_t prev = 0;
  for (const Match& m : matches) {
    if (m.start > prev) stretches.push_back({prev, m.start, invert});
    stretches.push_back({m.start, m.end, !invert});
    prev = m.end;
  }
  if (prev < text.size()) stretches.push_back({prev, text.size(), invert});

  // Each behavior is a fold over the stretches, as HF writes it. `after_match`: the stretch
  // looked at before this one (in fold order) was a match.
  bool after_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      pieces = stretches;
      break;
    case SplitBehavior::kRemoved:
      for (const Stretch& s : stretches) {
        if (!s.match) pieces.push_back(s);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const Stretch& s : stretches) {
        if (s.match == after_match && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back(s);
        }
        after_match = s.match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Stretch& s : stretches) {
        if (s.match && !after_match && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back(s);
        }
        after_match = s.match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // Right to left: a match joins the piece after it unless that piece starts with a match.
      for (auto s = stretches.rbegin(); s != stretches.rend(); ++s) {
        if (s->match && !after_match && !pieces.empty()) {
          pieces.back().start = s->start;
        } else {
          pieces.push_back(*s);
        }
        after_match = s->match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  for (const Stretch& p : pieces) {
    if (p.end > p.start) out.push_back(text.substr(p.start, p.end - p.start));
  }
}

void PreTokenizer::run_from(size_t step, std::string_view piece,
                            const std::function<void(std::string_view)>& word) const {
  if (piece.empty()) return;
  if (step == steps_.size()) {
    word(piece);
    return;
  }
  const PreTokenizerStep& s = steps_[step];
  std::string prefixed;
  std::vector<Match> matches;
  std::vector<std::string_view> parts;
  switch (s.kind) {
    case PreTokenizerStep::kByteLevel:
      // HF tests for U+0020 only: a piece starting with a tab or newline still gets the space.
      if (s.add_prefix_space && piece.front() != ' ') {
        prefixed.reserve(piece.size() + 1);
        prefixed += ' ';
        prefixed += piece;
        piece = prefixed;
      }
      if (!s.use_regex) {
        run_from(step + 1, piece, word);
        return;
      }
      find_matches(s.pattern, piece, matches);
      split_by_matches(piece, matches, SplitBehavior::kIsolated, false, parts);
      break;
    case PreTokenizerStep::kSplitPattern:
      find_matches(s.pattern, piece, matches);
      split_by_matches(piece, matches, s.behavior, s.invert, parts);
      break;
    case PreTokenizerStep::kSplitString:
      // HF escapes the string into a regex, so matches are left to right and do not overlap.
      for (size_t hit, pos = 0; (hit = piece.find(s.literal, pos)) != std::string_view::npos;
           pos = hit + s.literal.size()) {
        matches.push_back({hit, hit + s.literal.size()});
      }
      split_by_matches(piece, matches, s.behavior, s.invert, parts);
      break;
  }
  for (std::string_view part : parts) run_from(step + 1, part, word);
}

}  // namespace kvlab::bpe
