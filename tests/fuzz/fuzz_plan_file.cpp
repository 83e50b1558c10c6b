// Calibrated-method plan files (kvtuner's and mixkvq's YAML plans): any plan that loads is written
// back (as `kvlab search kvtuner` writes one) and loads again with the same layers.
#include "fuzz_input.h"
#include "kvlab/quant/plan_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "plan.yaml");
  kvlab::fuzz::run_parser([&] {
    const kvlab::PlanFile plan = kvlab::PlanFile::load(path);
    kvlab::fuzz::run_parser([&] { plan.check(plan.method, static_cast<int64_t>(plan.layers.size())); });
    const std::string copy = kvlab::fuzz::work_dir() + "/plan_again.yaml";
    plan.save(copy);
    const kvlab::PlanFile again = kvlab::PlanFile::load(copy);
    if (again.layers.size() != plan.layers.size() || again.method != plan.method) std::abort();
    for (size_t i = 0; i < plan.layers.size(); ++i)
      if (again.layers[i].k_bits != plan.layers[i].k_bits || again.layers[i].v_bits != plan.layers[i].v_bits) std::abort();
  });
  return 0;
}
