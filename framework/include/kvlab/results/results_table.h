#pragma once
// Selecting and printing stored cells: `kvlab results show --where method=kivi --metric ppl`.
#include <string>
#include <vector>

#include "kvlab/results/results_store.h"

namespace kvlab {

// "key=value" conditions, all of which must hold. Keys: the columns experiment, model, task,
// method, cell (an id prefix), slug (a substring), seed; or a parameter name (bits, ctx, ...),
// optionally qualified as method.<p>, task.<p> or calibration.<p>, compared as text.
class CellFilter {
 public:
  explicit CellFilter(const std::vector<std::string>& conditions);  // errors name the condition
  bool matches(const CellRecord& cell) const;
  // Errors (naming the key and the valid ones) for keys that match no column and no parameter of
  // any of `cells`: a typo should not silently select nothing.
  void check_keys(const std::vector<CellRecord>& cells) const;
  std::vector<CellRecord> apply(const std::vector<CellRecord>& cells) const;

 private:
  std::vector<std::pair<std::string, std::string>> conditions_;
};

// An aligned text table, one row per cell: cell id, slug, bits K/V, memory ratio, then the metrics
// (`metrics` empty: every metric present, in first-seen order). Unknown metric names are an error.
std::string format_results_table(const std::vector<CellRecord>& cells, const std::vector<std::string>& metrics);

}  // namespace kvlab
