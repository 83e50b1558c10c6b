#pragma once
// The per-layer plan file that a calibration step writes and a method reads back (the format shared
// by kvmix, kvtuner, mixkvq, the plots and the runner): plain YAML a person can read, edit and
// commit.
//
//   method: kvmix
//   model: /path/to/model
//   num_layers: 2
//   calibration: {calib: wiki.valid.tokens, samples: 10, max_len: 1024, ...}
//   <method-specific top-level keys, kept as written>
//   layers:
//     - {layer: 0, k_bits: 2, v_bits: 4, k_score: 0.0123, v_score: 0.0456, k_ratio: 0.2, v_ratio: 0.3}
//     - {layer: 1, k_bits: 3, v_bits: 2, k_score: 0.0201, v_score: 0.0111, k_ratio: 0.2, v_ratio: 0.2}
//
// layers, k_bits and v_bits are required; scores and ratios are optional. Other per-layer keys are
// allowed and ignored here.
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvlab::kvmix {

struct PlanLayer {
  int64_t layer = 0;
  int k_bits = 16, v_bits = 16;           // 1, 2, 3, 4, 8 or 16 (16: not quantized)
  std::optional<double> k_score, v_score; // importance (kvmix: gradient norms), >= 0
  std::optional<double> k_ratio, v_ratio; // full-precision ratio, in [0, 1)
};

struct PlanFile {
  std::string source;                     // the file it was read from (for error messages)
  std::string method = "kvmix";
  std::string model;
  int64_t num_layers = 0;
  YAML::Node calibration;                 // the calibration step's resolved parameters (a map)
  std::vector<std::pair<std::string, YAML::Node>> extra;  // other top-level keys, in order
  std::vector<PlanLayer> layers;

  bool has_scores() const;                // every layer has k_score and v_score
  bool has_ratios() const;                // every layer has k_ratio and v_ratio
  // Per-layer scores of "k" or "v"; an error naming the file and the first layer without one.
  std::vector<double> scores(const std::string& which) const;
};

// Reads and checks the structure (required keys, types, allowed bits, layer order). Errors name the
// file, the key and its line, e.g. "plan.yaml: layers[3].k_bits (line 12): 5 is not one of ...".
PlanFile read_plan_file(const std::string& path);
// Checks the plan against a model with `num_layers` layers (errors name the file and key).
void check_plan_matches_model(const PlanFile& plan, int64_t num_layers);
// Writes the plan (to a temporary file first, then renamed, so an existing plan is never left half
// written). Creates the parent folder if needed.
void write_plan_file(const PlanFile& plan, const std::string& path);

}  // namespace kvlab::kvmix
