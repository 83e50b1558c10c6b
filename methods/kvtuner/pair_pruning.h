#pragma once
// Intra-layer pruning (KVTuner step a): a pair is dropped when another pair costs no more bits and
// loses no more accuracy (more or equal bits and no less error). Exact ties keep the pair listed first.
#include <cstddef>
#include <vector>

#include "bit_pair.h"

namespace kvlab::kvtuner {

// loss[i] is the calibration loss of pairs[i] (for one layer, or summed over a cluster's layers).
// Returns the indices of the pairs no other pair dominates, in list order.
std::vector<size_t> undominated_pairs(const std::vector<BitPair>& pairs, const std::vector<double>& loss);

}  // namespace kvlab::kvtuner
