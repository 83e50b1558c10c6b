// KVmix plan files: reading, the per-layer scores, the check against a model, and a plan that loads
// is written back (as `kvlab profile kvmix` writes one) and loads again with the same layers.
#include "../../methods/kvmix/kvmix_plan_file.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "plan.yaml");
  kvlab::fuzz::run_parser([&] {
    const kvlab::kvmix::PlanFile plan = kvlab::kvmix::read_plan_file(path);
    if (plan.has_scores()) (void)(plan.scores("k").size() + plan.scores("v").size());
    kvlab::fuzz::run_parser([&] { kvlab::kvmix::check_plan_matches_model(plan, 4); });
    const std::string copy = kvlab::fuzz::work_dir() + "/plan_again.yaml";
    kvlab::kvmix::write_plan_file(plan, copy);
    const kvlab::kvmix::PlanFile again = kvlab::kvmix::read_plan_file(copy);
    if (again.layers.size() != plan.layers.size()) std::abort();
    for (size_t i = 0; i < plan.layers.size(); ++i)
      if (again.layers[i].k_bits != plan.layers[i].k_bits || again.layers[i].v_bits != plan.layers[i].v_bits) std::abort();
  });
  return 0;
}
