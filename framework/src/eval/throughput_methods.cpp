#include "kvlab/eval/throughput_methods.h"

#include <algorithm>
#include <filesystem>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/strings.h"
#include "kvlab/common/yaml_file.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/runner/experiment_spec.h"

namespace kvlab {
namespace {

// A map of scalars with ${...} variables expanded.
YAML::Node expanded_map(const YAML::Node& node, const std::string& where) {
  YAML::Node out(YAML::NodeType::Map);
  if (!node) return out;
  if (!node.IsMap()) fail("{}: expected a map of name: value", where);
  for (const auto& kv : node) {
    if (!kv.second.IsScalar()) fail("{}: '{}' must be a single value", where, kv.first.Scalar());
    out[kv.first.Scalar()] = expand_variables(kv.second.Scalar(), where);
  }
  return out;
}

bool declares(const std::string& method, const std::string& key) {
  for (const auto& p : MethodRegistry::instance().find(method).params)
    if (p.name == key) return true;
  return false;
}

}  // namespace

std::vector<MethodChoice> load_method_presets(const std::string& file) {
  check_input_file(file, "presets file", kMaxYamlFileBytes);
  YAML::Node root;
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::Exception& e) {
    fail("{}: not valid YAML ({})", file, e.what());
  }
  refuse_duplicate_yaml_keys(file);
  std::vector<MethodChoice> out;
  if (!root.IsMap()) fail("{}: expected a YAML map with a 'presets' map", file);
  const YAML::Node presets = root["presets"];
  if (!presets) return out;
  if (!presets.IsMap()) fail("{}: 'presets' must be a map of name: {{name, params, calibration}}", file);
  for (const auto& kv : presets) {
    const std::string label = kv.first.Scalar();
    const std::string where = yaml_where(file, kv.second) + " preset '" + label + "'";
    if (!kv.second.IsMap() || !kv.second["name"]) fail("{}: needs 'name' (a registered method)", where);
    for (const auto& field : kv.second) {
      const std::string key = field.first.Scalar();
      if (key != "name" && key != "params" && key != "calibration")
        fail("{}: key '{}' is not usable here (name, params, calibration)", where, key);
    }
    out.push_back({label, kv.second["name"].Scalar(), expanded_map(kv.second["params"], where),
                   expanded_map(kv.second["calibration"], where)});
  }
  return out;
}

std::vector<MethodChoice> resolve_method_choices(const std::vector<std::string>& names,
                                                 const std::vector<std::string>& sets, const std::string& file) {
  const MethodRegistry& registry = MethodRegistry::instance();
  const std::vector<std::string> methods = registry.names();
  std::vector<MethodChoice> presets;
  if (!file.empty()) presets = load_method_presets(file);
  std::vector<MethodChoice> out;
  for (const auto& name : names) {
    auto it = std::find_if(presets.begin(), presets.end(), [&](const MethodChoice& p) { return p.label == name; });
    if (it != presets.end()) {
      registry.find(it->method);  // a preset of a method this build lacks: the registry's error
      out.push_back({it->label, it->method, YAML::Clone(it->params), YAML::Clone(it->calibration)});
    } else if (std::find(methods.begin(), methods.end(), name) != methods.end()) {
      out.push_back({name, name, YAML::Node(YAML::NodeType::Map), YAML::Node(YAML::NodeType::Map)});
    } else {
      std::vector<std::string> all = methods;
      for (const auto& p : presets) all.push_back(p.label);
      fail("--methods: '{}' is neither a preset of {} nor a method{} (methods: {})", name, file.empty() ? "(none)" : file,
           did_you_mean(name, all), join(methods));
    }
  }
  for (const auto& set : sets) {
    const auto eq = set.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set '{}': expected [method.]key=value", set);
    std::string key = set.substr(0, eq);
    const std::string value = set.substr(eq + 1);
    std::string target;
    const auto dot = key.rfind('.');
    // A dot splits off a label unless the whole key is a listed label's parameter (none has dots).
    if (dot != std::string::npos) target = key.substr(0, dot), key = key.substr(dot + 1);
    bool applied = false;
    for (auto& c : out) {
      if (!target.empty() && target != c.label && target != c.method) continue;
      if (!declares(c.method, key)) {
        if (!target.empty()) fail("--set '{}': method '{}' ({}) has no parameter '{}'", set, c.method, c.label, key);
        continue;
      }
      c.params[key] = value;
      applied = true;
    }
    if (!applied)
      fail("--set '{}': {}", set,
           target.empty() ? "no listed method has parameter '" + key + "'" : "no listed method is '" + target + "'");
  }
  return out;
}

}  // namespace kvlab
