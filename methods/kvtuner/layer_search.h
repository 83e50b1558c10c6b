#pragma once
// KVTuner's offline search from measured per-layer sensitivities to a Pareto front of per-layer
// (K bits, V bits) plans:
//   (a) per layer, drop dominated pairs (pair_pruning.h);
//   (b) cluster layers with similar log-sensitivity vectors; a cluster shares one pair, and its
//       candidates are the pairs undominated for the cluster's summed losses (layer_clustering.h);
//   (c) the exact Pareto front of (average bits, estimated loss) over the clusters' candidates,
//       where a plan's estimated loss is the sum of its layers' single-layer losses (pareto_front.h).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bit_pair.h"

namespace kvlab::kvtuner {

// Sizes of the search space, as counts of whole-model plans (doubles: 6^32 does not fit 64 bits).
struct SearchSpace {
  double raw = 0;        // pairs ^ layers
  double pruned = 0;     // product over layers of the undominated pairs
  double clustered = 0;  // product over clusters of their candidates
  int64_t clusters = 0;
  std::string describe() const;  // "search space: 7776 combinations -> 243 after pruning -> 27 after clustering (3 clusters)"
};

struct ClusterCandidates {
  std::vector<int64_t> layers;  // sorted
  std::vector<size_t> pairs;    // indices into the pair list
};

struct PlanPoint {
  double avg_bits = 0;            // mean over layers of (k + v) / 2
  double loss = 0;                // estimated: sum of single-layer losses
  std::vector<size_t> layer_pair; // per layer: index into the pair list
};

struct LayerSearch {
  std::vector<std::vector<size_t>> kept;   // per layer: undominated pairs (step a)
  std::vector<ClusterCandidates> clusters; // step b
  SearchSpace space;
  std::vector<PlanPoint> front;            // step c, by increasing bits
};

// sens[l][p]: calibration loss with only layer l quantized, to pairs[p]. clusters <= 0: none.
LayerSearch search_layer_pairs(const std::vector<BitPair>& pairs, const std::vector<std::vector<double>>& sens,
                               int64_t clusters);

// Index of the front point with the least loss among those at or under target_bits (the one with
// the most bits, since the front's loss falls as bits rise); nullopt if none is.
std::optional<size_t> best_at_or_under(const std::vector<PlanPoint>& front, double target_bits);

}  // namespace kvlab::kvtuner
