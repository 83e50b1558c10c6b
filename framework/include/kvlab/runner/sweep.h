#pragma once
// The grid of an experiment: every (model, task variant, method variant, seed) cell with its fully
// resolved config and stable id. Building it checks everything that can be checked before any work:
// task and method parameters against their declarations, each method's plan against each model's
// architecture (group sizes, windows, bit widths), task inputs against the model, sweep keys
// against the parameters they name. Errors say "file:line: ..." and name the key.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "kvlab/quant/calibration.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/model_source.h"

namespace kvlab {

struct Cell {
  std::string id;                       // cell_id(config); "" when the model's checkpoint is absent (dry run)
  std::string slug;                     // "stories260K/ppl/kivi bits=2,group=8"
  size_t model = 0;                     // index into ExperimentSpec::models
  std::string task, method;             // registry names
  YAML::Node task_params, method_params, calibration_params;  // as written (variables unexpanded)
  std::string task_where, method_where; // "file:line: task 'ppl'" prefixes for errors
  int64_t seed = 0;
  const CalibrationInfo* calibration = nullptr;  // set when the plan comes from a calibration step
  std::string calibration_key;          // that plan's cache key (runner/cell_id.h)
  nlohmann::json config;                // what the id hashes; stored with the results
};

struct Grid {
  std::vector<ModelInfo> models;        // per ExperimentSpec::models
  std::vector<Cell> cells;              // unique ids, in grid order (model, sweep point, task, method)
  int64_t duplicates = 0;               // grid points that resolved to an earlier cell's config
  std::vector<std::string> notes;       // what could not be checked yet, and why
};

struct GridOptions {
  bool allow_absent_models = false;     // dry runs: validate against the entry's `shape`
  std::string cache_dir;                // where cached calibration plans are looked up ("" = none)
  int64_t max_cells = 100000;           // a larger grid is refused before it is expanded
};

Grid build_grid(const ExperimentSpec& spec, const GridOptions& options);

// A deterministic slice of the grid for one of n machines: cells i with i % count == index.
struct Shard {
  int64_t index = 0, count = 1;
  static Shard parse(const std::string& text);  // "i/n", 0 <= i < n; errors name the text
  bool contains(size_t cell_index) const { return static_cast<int64_t>(cell_index % count) == index; }
  std::string str() const;
};

// Expands variables in every scalar of a parameter map; String values that are relative paths to
// something that exists under base_dir become absolute (calibration text, plan files).
YAML::Node expand_params(const YAML::Node& params, const std::string& base_dir, const std::string& where);

// The cached plan of a calibration step, if it was computed: <cache>/plans/<method>-<key>/.
std::string calibration_plan_dir(const std::string& cache_dir, const std::string& method, const std::string& key);
std::string find_cached_plan(const std::string& cache_dir, const std::string& method, const std::string& key);

}  // namespace kvlab
