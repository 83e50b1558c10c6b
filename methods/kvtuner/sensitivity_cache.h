#pragma once
// The search's single-layer sensitivity table is almost all of its cost, and it does not depend on
// the target, `remeasure` or `clusters`. A search keeps the table at full precision in its out
// folder (sensitivity.cache), headed by a key naming everything it does depend on (model, every
// other parameter, the calibration token ids); a later search reuses a table with the same key
// found in its own out folder or under the reuse folder (the runner's plan cache, or the folder
// holding out), so sweeping target_bits measures once.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "calibration_loss.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/params.h"

namespace kvlab::kvtuner {

using SensitivityTable = std::vector<std::vector<PlanLoss>>;  // [layer][pair]

// One line: the parameters that shape the table, the model (path, dtype and a checksum of its
// weights, so another checkpoint at the same path is another table) and a hash of the windows.
std::string sensitivity_key(const LlamaModel& model, const std::string& model_dir, const ParamSet& params,
                            const std::vector<std::vector<int64_t>>& windows);

// A table with this key and shape in `out`, or anywhere up to 3 folders below `reuse_dir` (empty:
// the folder holding `out`); nullopt when there is none. A damaged or foreign file is skipped,
// never an error. `found` receives the file's path.
std::optional<SensitivityTable> find_sensitivity(const std::string& out, const std::string& reuse_dir,
                                                 const std::string& key, size_t layers, size_t pairs,
                                                 std::string* found = nullptr);

// The text of out/sensitivity.cache for `table` (the search writes it whole or not at all).
inline constexpr const char* kSensitivityFile = "sensitivity.cache";
std::string format_sensitivity(const std::string& key, const SensitivityTable& table);

}  // namespace kvlab::kvtuner
