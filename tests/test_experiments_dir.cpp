// Every spec under experiments/ dry-runs: it loads, its grid builds and every cell is checked (plans
// against the models' architectures, tasks' inputs). Specs that use methods or tasks not registered
// in this build yet (they land in parallel) are skipped with a message naming them, as are specs
// that read ../shared when it is absent.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "kvlab/common/strings.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/sweep.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

std::vector<std::string> experiment_specs() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(KVLAB_SOURCE_DIR "/experiments"))
    if (e.path().extension() == ".yaml") out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class ExperimentSpecs : public ::testing::TestWithParam<std::string> {};

TEST_P(ExperimentSpecs, DryRuns) {
  const std::string path = std::string(KVLAB_SOURCE_DIR "/experiments/") + GetParam();
  const auto missing = ExperimentSpec::unregistered(path);
  if (!missing.empty()) GTEST_SKIP() << GetParam() << " uses what this build lacks: " << join(missing);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  if (text.find("${shared}") != std::string::npos && !test::have_shared())
    GTEST_SKIP() << GetParam() << " reads ../shared, which is absent";
  GridOptions dry;
  dry.allow_absent_models = true;
  const ExperimentSpec spec = ExperimentSpec::load(path);
  const Grid grid = build_grid(spec, dry);
  EXPECT_GT(grid.cells.size(), 0u);
  for (const auto& c : grid.cells) EXPECT_FALSE(c.slug.empty());
}

INSTANTIATE_TEST_SUITE_P(Experiments, ExperimentSpecs, ::testing::ValuesIn(experiment_specs()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param.substr(0, info.param.size() - 5);
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(ExperimentSpecs, TheQuickstartIsSmallAndUsesTheReferenceModel) {
  const ExperimentSpec spec = ExperimentSpec::load(KVLAB_SOURCE_DIR "/experiments/quickstart.yaml");
  const Grid grid = build_grid(spec, GridOptions{});
  EXPECT_EQ(grid.cells.size(), 7u);
  EXPECT_TRUE(grid.models[0].present);
  EXPECT_EQ(grid.cells[0].slug, "kjv-llama/ppl/fp16");
  EXPECT_EQ(grid.cells[0].config["dtype"], "bfloat16");
}

TEST(ExperimentSpecs, UnregisteredMethodsAndTasksAreNamed) {
  test::TempDir dir;
  std::ofstream(dir / "p.yaml") << "presets:\n  future: {name: some-future-method}\n";
  std::ofstream(dir / "t.yaml") << "name: t\ninclude: p.yaml\nmodels: [x]\ntasks: [ppl, future-task]\n"
                                   "methods: [fp16, future, {name: other-method}]\n";
  EXPECT_EQ(ExperimentSpec::unregistered(dir / "t.yaml"),
            (std::vector<std::string>{"method some-future-method", "method other-method", "task future-task"}));
}

}  // namespace
}  // namespace kvlab
