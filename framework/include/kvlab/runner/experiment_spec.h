#pragma once
// An experiment written in YAML: the models, the tasks, the methods (with named presets) and the
// parameter grid to sweep. Loading checks the file's structure (unknown keys with the closest valid
// ones, wrong types) and reports "file:line: ..." naming the key; the grid (runner/sweep.h) then
// checks every cell against the registries and the models before any work is done.
//
//   name: kivi-vs-uniform           # required; names the store (results/<name>.sqlite)
//   description: ...                # optional
//   include: [presets/paper.yaml]   # optional: files whose `presets:` become usable here
//   store: out/x.sqlite             # optional; default results/<name>.sqlite under the working dir
//   cache: out/cache                # optional: prepared models and calibration plans; default: the store's folder
//   dtype: float32                  # defaults for every model entry
//   device: cpu
//   seed: 0                         # the cells' seed unless swept (when written or swept, it also
//                                   # sets every method / task / calibration `seed` parameter left free)
//   models:                         # each: a checkpoint dir, or {name, path|llama2c|make, dtype, device, shape}
//     - {name: stories260K, llama2c: {model: ${shared}/data/models/stories260K/stories260K.bin,
//                                     tokenizer: ${shared}/data/models/stories260K/tok512.bin}}
//     - {name: tiny, make: {shape: tiny, seed: 3}}
//     - {name: llama2-7b, path: ${models}/Llama-2-7b-hf, shape: llama2-7b, dtype: float16, device: cuda}
//   tasks:                          # each: {name, params, sweep}
//     - {name: ppl, params: {text: ${shared}/data/wikitext-2-raw/wiki.test.raw, ctx: 256}}
//   methods:                        # each: a name or preset, or {name|use, params, sweep, calibration}
//     - fp16
//     - {name: kivi, params: {group: 8}, sweep: {bits: [2, 4]}}
//     - {use: kivi-2}
//   presets:                        # named method entries (also from `include`)
//     kivi-2: {name: kivi, params: {bits: 2, group: 32, residual: 128}}
//   sweep:                          # grid over any parameter: the product of all keys
//     residual: [32, 64]            # every method/task that declares it and does not fix it
//     kivi.group: [8, 16]           # only that method (or task)
//     "k_bits,v_bits": [[2, 4], [4, 2]]   # keys swept together
//     seed: [0, 1]
//
// Variables in strings: ${shared} (env KVLAB_SHARED, else the repository's ../shared), ${repo}
// (the kvlab source tree), ${models} (env KVLAB_MODELS, else ${repo}/models), or any environment
// variable ${NAME}. Relative paths resolve against the spec file's folder.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace kvlab {

// One key of a sweep: a parameter (or several swept together) and its values.
struct SweepAxis {
  std::string key;                              // as written, e.g. "bits", "kivi.group", "k_bits,v_bits"
  struct Target {
    std::string owner;                          // method / task / preset name; "" = any that declares it
    bool calibration = false;                   // a parameter of the method's calibration step
    std::string param;                          // "seed" at top level = the cells' seed
  };
  std::vector<Target> targets;                  // one per comma-separated part
  std::vector<std::vector<YAML::Node>> values;  // values[i][j]: the i-th point's value for targets[j]
  std::string where;                            // "file:line"
};

struct ModelEntry {
  enum class Source { Path, Llama2c, Make };
  std::string name;
  Source source = Source::Path;
  std::string path;                       // Path: checkpoint dir (variables expanded, absolute)
  std::string llama2c_model, llama2c_tokenizer;   // Llama2c: files (expanded, absolute)
  std::string make_shape = "tiny";        // Make: a named shape (kvlab make-model --shape)
  uint64_t make_seed = 0;
  std::string make_dtype = "float32";
  double make_init_std = 0.02;
  std::string shape;                      // architecture to validate against when the checkpoint is absent
  std::string dtype, device;
  YAML::Node source_node;                 // the source as written (recorded in the cells' config)
  std::string where;                      // "file:line"
};

struct TaskEntry {
  std::string name;
  YAML::Node params;                      // map (may be null)
  std::vector<SweepAxis> sweep;
  std::string where;
};

struct MethodEntry {
  std::string name;                       // registry name
  std::string preset;                     // the preset it came from, if any
  YAML::Node params;                      // map (may be null)
  YAML::Node calibration;                 // the calibration step's params (map, may be null)
  std::vector<SweepAxis> sweep;
  std::string where;
};

struct ExperimentSpec {
  std::string file;                       // the spec's path as given
  std::string dir;                        // its folder (absolute): relative paths resolve here
  std::string name, description;
  std::string store;                      // absolute, or "" for the default
  std::string cache;                      // absolute, or "" for the default
  std::string dtype = "float32", device = "cpu";
  int64_t seed = 0;
  bool seed_given = false;                // `seed:` written: it then also sets every undeclared-fixed `seed` parameter
  std::vector<ModelEntry> models;
  std::vector<TaskEntry> tasks;
  std::vector<MethodEntry> methods;
  std::vector<SweepAxis> sweep;           // top level

  // Reads and checks the structure; throws kvlab::Error "file:line: ..." naming the key.
  static ExperimentSpec load(const std::string& path);

  // The store path: `store` or results/<name>.sqlite under the working directory.
  std::string store_path() const;
  // Where prepared models and calibration plans go: `cache` or the store's folder.
  std::string cache_dir(const std::string& store_path) const;
  // Without loading the spec: the methods (through presets too) and tasks its entries use that this
  // build does not register, as "method kvmix", "task longbench". Lets a caller skip a spec written
  // for methods or tasks that have not landed yet instead of failing on it.
  static std::vector<std::string> unregistered(const std::string& path);
};

// Expands ${shared}, ${repo}, ${models} and ${ENV_VAR} in `text`; an unknown variable is an error
// naming `where`.
std::string expand_variables(const std::string& text, const std::string& where);
// Expands variables, then makes a relative path absolute against `base_dir`.
std::string resolve_path(const std::string& text, const std::string& base_dir, const std::string& where);
// "file:line" of a node (line 1-based), or just the file when the node has no mark.
std::string yaml_where(const std::string& file, const YAML::Node& node);

}  // namespace kvlab
