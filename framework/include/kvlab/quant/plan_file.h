#pragma once
// The per-layer plan file that calibration steps write and methods read back (`--set plan=FILE`):
// plain YAML a person can read, edit and commit.
//
//   method: kvtuner              # which method's plan this is
//   model: /path/to/model        # the checkpoint it was calibrated on (informational)
//   num_layers: 6
//   calibration: {calib: wiki.txt, samples: 8, ...}   # the step's resolved parameters
//   layers:                      # one entry per layer, in order
//     - {layer: 0, k_bits: 4, v_bits: 2, k_score: 0.0123, v_score: 0.0456}
//
// layer, k_bits and v_bits are always present; scores and method-specific keys per layer (and
// method-specific top-level keys) are kept as YAML for the method to read.
#include <yaml-cpp/yaml.h>

#include <optional>
#include <string>
#include <vector>

namespace kvlab {

struct PlanFileLayer {
  int k_bits = 16, v_bits = 16;
  std::optional<double> k_score, v_score;
  YAML::Node node;  // the whole entry (method-specific keys)
};

struct PlanFile {
  std::string path;                  // where it was read from (errors name it)
  std::string method;
  std::string model;
  YAML::Node calibration;            // map (may be empty)
  std::vector<PlanFileLayer> layers;
  YAML::Node extra;                  // method-specific top-level keys, in file order (a map)

  // Reads and checks the structure: required keys, num_layers == number of entries, entries in
  // layer order, bits in {1, 2, 3, 4, 8, 16}. Errors name the file and the key.
  static PlanFile load(const std::string& path);
  // Checks it fits a method and a model: `method` matches and the layer count is the model's.
  void check(const std::string& expected_method, int64_t model_layers) const;
  // "FILE: layers[3].key" for errors about a method-specific key.
  std::string where(size_t layer, const std::string& key) const;
  // Writes the file (flow-style entry per layer), atomically: a temporary file renamed over `path`,
  // so an existing plan is never left half-written.
  void save(const std::string& path) const;
};

// A YAML number written with `digits` significant digits (yaml-cpp would write 2.2 as
// 2.2000000000000002): for scores and losses in plan files.
YAML::Node yaml_number(double v, int digits = 7);

}  // namespace kvlab
