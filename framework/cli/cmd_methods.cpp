// kvlab methods: every registered KV-cache method with its parameters, defaults and ranges.
#include <fmt/format.h>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/quant/kv_method.h"

namespace kvlab::cli {

int methods(const Args& args) {
  po::options_description desc("methods options");
  auto vm = parse(args, desc, "kvlab methods");
  if (!vm) return 0;
  const auto& reg = MethodRegistry::instance();
  for (const auto& name : reg.names()) {
    const MethodInfo& m = reg.find(name);
    fmt::print("{}\n  {}\n", m.name, m.description);
    for (const auto& p : m.params) {
      const std::string range = p.range_text();
      fmt::print("    {:<16} {:<6} default {:<15} {}{}\n", p.name, p.type_name(), p.default_value, p.help,
                 range.empty() ? "" : " [" + range + "]");
    }
    if (m.params.empty()) fmt::print("    (no parameters)\n");
  }
  return 0;
}

}  // namespace kvlab::cli
