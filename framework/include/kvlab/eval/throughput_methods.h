#pragma once
// How `kvlab bench throughput --methods a,b,c [--set ...]` names methods. Each name is
//   - a preset of the presets file (experiments/presets/paper.yaml by default: kivi-2,
//     kvmix-k2.19v2.38, ...): its method, params and calibration inputs, as the runner reads it; or
//   - a registered method (kvlab methods) with its default parameters.
// --set [LABEL.]key=value then sets a parameter: LABEL (a listed name, or a method's registry name)
// picks the entries; without it, every listed entry whose method declares the key. A key no listed
// method declares is an error, as are unknown names (with the closest presets and methods).
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace kvlab {

struct MethodChoice {
  std::string label;        // as listed (preset or method name)
  std::string method;       // registry name
  YAML::Node params;        // map: the preset's params with --set applied (variables expanded)
  YAML::Node calibration;   // map: the preset's calibration inputs (empty when none)
};

// The presets file's `presets:` map (name -> choice). A missing file is an error naming it.
std::vector<MethodChoice> load_method_presets(const std::string& presets_file);

std::vector<MethodChoice> resolve_method_choices(const std::vector<std::string>& names,
                                                 const std::vector<std::string>& sets,
                                                 const std::string& presets_file);

}  // namespace kvlab
