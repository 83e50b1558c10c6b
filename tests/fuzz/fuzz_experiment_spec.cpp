// Experiment specs: loading (structure, includes, presets, variables) and, for specs whose models
// are all generated (`make:`, so that no path on the machine is read), the grid with every
// parameter and plan check. The spec sits in a folder holding experiments/presets, so that
// `include: presets/paper.yaml` resolves as in the repository.
#include <filesystem>

#include "fuzz_input.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/sweep.h"

namespace {

void prepare_folder() {
  static const bool done = [] {
    const std::filesystem::path presets = kvlab::fuzz::work_dir() + "/presets";
    std::filesystem::create_directories(presets);
    for (const auto& e : std::filesystem::directory_iterator(KVLAB_SOURCE_DIR "/experiments/presets"))
      std::filesystem::copy_file(e.path(), presets / e.path().filename(),
                                 std::filesystem::copy_options::overwrite_existing);
    return true;
  }();
  (void)done;
}

// The number of grid points the sweeps describe, capped: the grid is built only for small ones.
double grid_points(const kvlab::ExperimentSpec& spec) {
  double n = static_cast<double>(spec.models.size()) * spec.tasks.size() * spec.methods.size();
  for (const auto& axis : spec.sweep) n *= std::max<size_t>(1, axis.values.size());
  for (const auto& t : spec.tasks)
    for (const auto& axis : t.sweep) n *= std::max<size_t>(1, axis.values.size());
  for (const auto& m : spec.methods)
    for (const auto& axis : m.sweep) n *= std::max<size_t>(1, axis.values.size());
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  prepare_folder();
  const std::string path = kvlab::fuzz::write_input(data, size, "spec.yaml");
  kvlab::fuzz::run_parser([&] {
    const kvlab::ExperimentSpec spec = kvlab::ExperimentSpec::load(path);
    (void)kvlab::ExperimentSpec::unregistered(path);
    for (const auto& m : spec.models)
      if (m.source != kvlab::ModelEntry::Source::Make) return;
    if (grid_points(spec) > 64) return;
    kvlab::GridOptions opt;
    opt.allow_absent_models = true;
    (void)kvlab::build_grid(spec, opt);
  });
  return 0;
}
