#include "pair_pruning.h"

#include "kvlab/common/error.h"

namespace kvlab::kvtuner {

std::vector<size_t> undominated_pairs(const std::vector<BitPair>& pairs, const std::vector<double>& loss) {
  if (pairs.size() != loss.size()) fail("pair pruning: {} pairs but {} losses", pairs.size(), loss.size());
  std::vector<size_t> kept;
  for (size_t p = 0; p < pairs.size(); ++p) {
    bool dominated = false;
    for (size_t q = 0; q < pairs.size() && !dominated; ++q) {
      if (q == p) continue;
      const int bq = pairs[q].bit_sum(), bp = pairs[p].bit_sum();
      if (bq > bp || loss[q] > loss[p]) continue;
      // q is at least as good in both: it dominates unless it is an exact tie listed later.
      dominated = bq < bp || loss[q] < loss[p] || q < p;
    }
    if (!dominated) kept.push_back(p);
  }
  return kept;
}

}  // namespace kvlab::kvtuner
