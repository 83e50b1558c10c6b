#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"
#include "kvlab/quant/calibration.h"

namespace kvlab {

CalibrationRegistry& CalibrationRegistry::instance() {
  static CalibrationRegistry registry;
  return registry;
}

void CalibrationRegistry::add(CalibrationInfo info) {
  for (const auto& s : steps_)
    if (s.method == info.method) fail("method '{}' registers a calibration step twice", info.method);
  steps_.push_back(std::move(info));
}

const CalibrationInfo& CalibrationRegistry::find(const std::string& verb, const std::string& method) const {
  for (const auto& s : steps_)
    if (s.verb == verb && s.method == method) return s;
  const auto all = methods_with(verb);
  fail("no '{}' step for method '{}'{} (methods with one: {})", verb, method, did_you_mean(method, all),
       all.empty() ? "none" : join(all));
}

const CalibrationInfo* CalibrationRegistry::for_method(const std::string& method) const {
  for (const auto& s : steps_)
    if (s.method == method) return &s;
  return nullptr;
}

std::vector<std::string> CalibrationRegistry::methods_with(const std::string& verb) const {
  std::vector<std::string> out;
  for (const auto& s : steps_)
    if (s.verb == verb) out.push_back(s.method);
  std::sort(out.begin(), out.end());
  return out;
}

CalibrationRegistrar::CalibrationRegistrar(CalibrationInfo info) {
  try {
    CalibrationRegistry::instance().add(std::move(info));
  } catch (const Error& e) {
    std::fprintf(stderr, "kvlab: error: %s\n", e.what());
    std::abort();
  }
}

}  // namespace kvlab
