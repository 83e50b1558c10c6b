// config.json: any accepted config has products that fit (q_dim, kv_dim, parameter_count) and
// survives a round trip through its own JSON.
#include <nlohmann/json.hpp>

#include "fuzz_input.h"
#include "kvlab/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "config.json");
  kvlab::fuzz::run_parser([&] {
    const kvlab::ModelConfig c = kvlab::ModelConfig::from_file(path);
    (void)(c.q_dim() + c.kv_dim() + c.kv_groups());
    const int64_t params = c.parameter_count();
    const kvlab::ModelConfig again = kvlab::ModelConfig::from_json(c.to_json(), "round trip");
    if (again.parameter_count() != params || again.to_json() != c.to_json()) std::abort();
  });
  return 0;
}
