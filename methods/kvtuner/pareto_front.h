#pragma once
// The multi-objective search (KVTuner step c) for an additive model: each group (a cluster of
// layers) picks one option; total bits and total loss are sums over groups. The exact Pareto front
// (fewest bits, least loss) is built group by group, keeping after each group only the partial
// sums no other partial sum dominates (Nemhauser-Ullmann). Bits are integers (sums of K + V code
// widths), so the front never holds more points than there are distinct bit totals, and the search
// is exact and polynomial where KVTuner samples with NSGA-II.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvlab::kvtuner {

struct Option {
  int64_t bits = 0;  // integer cost (e.g. layers * (k_bits + v_bits))
  double loss = 0;
};

struct FrontPoint {
  int64_t bits = 0;
  double loss = 0;
  std::vector<size_t> choice;  // per group: the index of its option
};

// The non-dominated sums, by increasing bits (so by decreasing loss). A point is kept when no
// other sum has fewer-or-equal bits and less-or-equal loss; of exact ties the first found is kept.
std::vector<FrontPoint> additive_pareto_front(const std::vector<std::vector<Option>>& groups);

}  // namespace kvlab::kvtuner
