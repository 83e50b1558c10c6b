#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"
#include "kvlab/quant/kv_method.h"

namespace kvlab {

MethodRegistry& MethodRegistry::instance() {
  static MethodRegistry registry;
  return registry;
}

void MethodRegistry::add(MethodInfo info) {
  for (const auto& m : methods_)
    if (m.name == info.name) fail("method '{}' is registered twice", info.name);
  methods_.push_back(std::move(info));
}

const MethodInfo& MethodRegistry::find(const std::string& name) const {
  for (const auto& m : methods_)
    if (m.name == name) return m;
  const auto all = names();
  fail("unknown method '{}'{} (valid: {})", name, did_you_mean(name, all), join(all));
}

std::vector<std::string> MethodRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& m : methods_) out.push_back(m.name);
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<KvMethod> MethodRegistry::create(const std::string& name, const YAML::Node& params,
                                                 const std::string& where) const {
  const MethodInfo& info = find(name);
  return info.make(ParamSet::resolve(info.params, params, where + " '" + name + "'"));
}

MethodRegistrar::MethodRegistrar(MethodInfo info) {
  try {
    MethodRegistry::instance().add(std::move(info));
  } catch (const Error& e) {
    // Static initialisation: no one can catch this; say why and stop.
    std::fprintf(stderr, "kvlab: error: %s\n", e.what());
    std::abort();
  }
}

}  // namespace kvlab
