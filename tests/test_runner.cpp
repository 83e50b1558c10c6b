// The experiment runner in process: cells run once and land in the store with their config and
// the same numbers the task gives when called directly; re-runs skip finished cells; a calibration
// step runs once per model and inputs and is cached; a failing cell is reported (and skipped with
// keep_going) without touching the others.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "kvlab/common/error.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/results/results_store.h"
#include "kvlab/runner/runner.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

// A calibrated method only these tests know: per-layer widths come from a plan file in the shared
// plan format (method, num_layers, layers: [{layer, k_bits, v_bits}]); 'bias' 1 adds 2 bits to V.
class PlanFileTestMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;
  static MethodInfo info() {
    return {"test-runner-planned", "test method: per-layer bits from a plan file",
            {ParamSpec::string("plan", "", "plan file (empty or auto: from the calibration step)"),
             ParamSpec::integer("bias", 0, "add 2 bits to V when 1", 0, 1)},
            [](const ParamSet& p) { return std::make_unique<PlanFileTestMethod>(p); }};
  }
  CachePlan plan(const ModelConfig& c) const override {
    const std::string path = params().string("plan");
    if (path.empty() || path == "auto") fail("test-runner-planned: no plan file given");
    const YAML::Node file = YAML::LoadFile(path);
    if (file["num_layers"].as<int64_t>() != c.num_hidden_layers) fail("{}: num_layers does not match", path);
    CachePlan plan;
    plan.method = "test-runner-planned";
    for (const auto& l : file["layers"]) {
      LayerPlan lp;
      lp.k.bits = l["k_bits"].as<int>();
      lp.v.bits = l["v_bits"].as<int>() + 2 * static_cast<int>(params().integer("bias"));
      lp.k.group = lp.v.group = -1;
      plan.layers.push_back(lp);
    }
    return plan;
  }
};
KVLAB_REGISTER_METHOD(PlanFileTestMethod)

std::atomic<int> g_calibrations{0};

CalibrationInfo planned_step() {
  return {"test-runner-planned", "profile", "test step: k_bits 4 for 2 samples, else 8",
          {ParamSpec::integer("samples", 2, "prompts", 1)}, "plan",
          [](CalibrationContext& ctx) {
            ++g_calibrations;
            const int k = ctx.params.integer("samples") == 2 ? 4 : 8;
            std::ofstream out(ctx.out);
            out << "method: test-runner-planned\nnum_layers: " << ctx.model.config().num_hidden_layers
                << "\nlayers:\n";
            for (int64_t l = 0; l < ctx.model.config().num_hidden_layers; ++l)
              out << "  - {layer: " << l << ", k_bits: " << k << ", v_bits: 2}\n";
            return ctx.out;
          }};
}
KVLAB_REGISTER_CALIBRATION(planned_step)

// A method that fails for one parameter value once it meets the model (after the grid was
// checked): a cell that breaks mid-sweep.
class FailingTestMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;
  static MethodInfo info() {
    return {"test-runner-failing", "test method: throws from calibrate() when fail=1",
            {ParamSpec::integer("fail", 0, "throw from calibrate()", 0, 1)},
            [](const ParamSet& p) { return std::make_unique<FailingTestMethod>(p); }};
  }
  void calibrate(LlamaModel&) override {
    if (params().integer("fail")) fail("test-runner-failing: failing on purpose");
  }
  CachePlan plan(const ModelConfig& c) const override {
    CachePlan plan;
    plan.method = "test-runner-failing";
    plan.layers.resize(static_cast<size_t>(c.num_hidden_layers));
    for (auto& l : plan.layers) l.k_flush.kind = l.v_flush.kind = FlushRule::Kind::Never;
    return plan;
  }
};
KVLAB_REGISTER_METHOD(FailingTestMethod)

// A tiny random checkpoint, written once by the kvlab binary. (Generating it in this process
// would train a SentencePiece model here, which the test binary cannot do: see the report on the
// shim. The runner's `make:` source is exercised through the binary in test_runner_cli.cpp.)
const std::string& tiny_model() {
  static test::TempDir* dir = [] {
    auto* d = new test::TempDir();
    const std::string cmd = std::string(KVLAB_BINARY) + " make-model --shape tiny --seed 3 --out " + (*d / "tiny") +
                            " > /dev/null";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "make-model failed: " << cmd;
    return d;
  }();
  static const std::string path = *dir / "tiny";
  return path;
}

// A method with its own `seed` (like kvmix's random ranking) and a calibration step, which also
// works without a plan when `planless` is 1 (like kvmix with bits_from=random).
class SeededTestMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;
  static MethodInfo info() {
    return {"test-runner-seeded", "test method: a seed parameter; needs its plan unless planless=1",
            {ParamSpec::string("plan", "", "plan file"), ParamSpec::integer("seed", 7, "seed", 0),
             ParamSpec::integer("planless", 0, "works without a plan", 0, 1)},
            [](const ParamSet& p) { return std::make_unique<SeededTestMethod>(p); }};
  }
  CachePlan plan(const ModelConfig& c) const override {
    if (params().string("plan").empty() && !params().integer("planless")) fail("test-runner-seeded: needs a plan");
    CachePlan plan;
    plan.method = "test-runner-seeded";
    plan.layers.resize(static_cast<size_t>(c.num_hidden_layers));
    for (auto& l : plan.layers) l.k_flush.kind = l.v_flush.kind = FlushRule::Kind::Never;
    return plan;
  }
};
KVLAB_REGISTER_METHOD(SeededTestMethod)

// Its step writes a folder of outputs at `out` (as kvtuner's search does) and returns the plan in it.
CalibrationInfo seeded_step() {
  return {"test-runner-seeded", "search", "test step", {ParamSpec::integer("seed", 42, "seed", 0)}, "plan",
          [](CalibrationContext& ctx) {
            std::filesystem::create_directories(ctx.out);
            std::ofstream(ctx.out + "/front.csv") << "bits,loss\n";
            std::ofstream(ctx.out + "/chosen.yaml") << "seed: " << ctx.params.integer("seed") << "\n";
            return ctx.out + "/chosen.yaml";
          }};
}
KVLAB_REGISTER_CALIBRATION(seeded_step)

std::string write_spec(const test::TempDir& dir, const std::string& methods) {
  std::ofstream(dir / "t.yaml") << "name: t\nmodels:\n  - {name: tiny, path: " << tiny_model() << "}\n"
                                << "tasks:\n  - name: ppl\n    params: {text: \"${repo}/datasets/tiny/tokenizer_corpus.txt\", "
                                   "ctx: 64, max_windows: 2}\n"
                                << "store: " << (dir / "out/t.sqlite") << "\n"
                                << methods;
  return dir / "t.yaml";
}

RunOptions quiet() {
  RunOptions o;
  o.threads = 1;
  o.task_progress = false;
  o.log = nullptr;
  return o;
}

TEST(Runner, RunsEachCellOnceWithTheTasksOwnNumbers) {
  test::TempDir dir;
  const auto spec = ExperimentSpec::load(write_spec(dir, R"(methods:
  - fp16
  - {name: kivi, params: {group: 8, residual: 16}, sweep: {bits: [2, 4]}}
)"));
  const RunSummary s = run_experiment(spec, quiet());
  EXPECT_EQ(s.cells, 3);
  EXPECT_EQ(s.ran, 3);
  EXPECT_EQ(s.store, dir / "out/t.sqlite");

  ResultsStore store(s.store, ResultsStore::Mode::ReadOnly);
  const Grid grid = build_grid(spec, GridOptions{});
  ASSERT_EQ(store.count(), 3);
  for (const auto& cell : grid.cells) {
    const auto rec = store.find(cell.id);
    ASSERT_TRUE(rec) << cell.slug;
    EXPECT_EQ(rec->config, cell.config);
    EXPECT_EQ(rec->slug, cell.slug);
    EXPECT_EQ(rec->experiment, "t");
    EXPECT_EQ(rec->model, "tiny");
    EXPECT_EQ(rec->metrics.size(), 6u);
    EXPECT_GT(rec->seconds, 0);
    EXPECT_EQ(rec->finished_at.size(), 20u);
    EXPECT_FALSE(rec->git_rev.empty());
  }

  // The kivi bits=2 cell against the ppl task run directly on the prepared checkpoint.
  const Cell& kivi2 = grid.cells[1];
  ASSERT_EQ(kivi2.slug, "tiny/ppl/kivi bits=2,group=8,residual=16");
  const std::string model_dir = tiny_model();
  LlamaModel model = LlamaModel::load(model_dir);
  auto tok = load_tokenizer(model_dir);
  const CachePlan plan = MethodRegistry::instance()
                             .create("kivi", YAML::Load("{bits: 2, group: 8, residual: 16}"))
                             ->plan(model.config());
  auto task = TaskRegistry::instance().create(
      "ppl", YAML::Load("{text: " KVLAB_SOURCE_DIR "/datasets/tiny/tokenizer_corpus.txt, ctx: 64, max_windows: 2}"));
  TaskContext ctx{model, *tok, model_dir, plan, "", false};
  const TaskResult direct = task->run(ctx);
  const auto rec = store.find(kivi2.id);
  for (const auto& m : direct.metrics) EXPECT_DOUBLE_EQ(rec->metrics.at(m.name), m.value) << m.name;
  EXPECT_DOUBLE_EQ(rec->bits_k, direct.bits_k);
  EXPECT_EQ(rec->cache_bytes, direct.cache_bytes);
  // fp16 changes nothing: its perplexity is the reference's.
  const auto fp = store.find(grid.cells[0].id);
  EXPECT_DOUBLE_EQ(fp->metrics.at("ppl"), fp->metrics.at("ppl_fp16"));
  EXPECT_DOUBLE_EQ(fp->metrics.at("kl_mean"), 0.0);

  // A second run finds everything done and writes nothing.
  const RunSummary again = run_experiment(spec, quiet());
  EXPECT_EQ(again.ran, 0);
  EXPECT_EQ(again.already_done, 3);
  EXPECT_EQ(ResultsStore(s.store, ResultsStore::Mode::ReadOnly).count(), 3);
}

TEST(Runner, CalibrationRunsOncePerModelAndInputsAndIsCached) {
  test::TempDir dir;
  g_calibrations = 0;
  const auto spec = ExperimentSpec::load(write_spec(dir, R"(methods:
  - {name: test-runner-planned, calibration: {samples: 2}, sweep: {bias: [0, 1]}}
)"));
  // Before the step has run, the grid notes that the plan is not checked yet.
  GridOptions g;
  g.cache_dir = dir / "out";
  EXPECT_EQ(build_grid(spec, g).notes.size(), 1u);

  const RunSummary s = run_experiment(spec, quiet());
  EXPECT_EQ(s.ran, 2);
  EXPECT_EQ(s.calibrations, 1);
  EXPECT_EQ(g_calibrations, 1);  // two cells, one calibration
  ResultsStore store(s.store, ResultsStore::Mode::ReadOnly);
  for (const auto& c : store.cells()) {
    EXPECT_EQ(c.config["method"]["params"]["plan"], "auto");
    EXPECT_EQ(c.config["method"]["calibration"]["params"]["samples"], 2);
    // The plan's widths reached the cache: per-token groups over all 16 channels add 32/16 bits.
    EXPECT_DOUBLE_EQ(c.bits_k, 4 + 2.0);
    EXPECT_DOUBLE_EQ(c.bits_v, (c.config["method"]["params"]["bias"] == 1 ? 4 : 2) + 2.0);
  }
  // Now the plan is cached: the grid checks it, and nothing recalibrates.
  EXPECT_TRUE(build_grid(spec, g).notes.empty());
  const std::string plans = dir / "out/plans";
  ASSERT_TRUE(std::filesystem::exists(plans));
  int folders = 0;
  for (const auto& e : std::filesystem::directory_iterator(plans)) {
    ++folders;
    EXPECT_TRUE(std::filesystem::exists(e.path() / "calibration.json"));
    EXPECT_TRUE(std::filesystem::exists(e.path() / "plan.yaml"));
  }
  EXPECT_EQ(folders, 1);

  // Other calibration inputs: another plan, other cells.
  const auto spec3 = ExperimentSpec::load(write_spec(dir, R"(methods:
  - {name: test-runner-planned, calibration: {samples: 3}}
)"));
  const RunSummary s3 = run_experiment(spec3, quiet());
  EXPECT_EQ(s3.ran, 1);
  EXPECT_EQ(g_calibrations, 2);
  const auto cells = ResultsStore(s.store, ResultsStore::Mode::ReadOnly).cells();
  ASSERT_EQ(cells.size(), 3u);
  int eight = 0;
  for (const auto& c : cells) eight += c.bits_k == 8 + 2.0;
  EXPECT_EQ(eight, 1);

}

std::string plan_text(int k_bits) {
  std::string t = "method: test-runner-planned\nnum_layers: 4\nlayers:\n";
  for (int l = 0; l < 4; ++l) t += "  - {layer: " + std::to_string(l) + ", k_bits: " + std::to_string(k_bits) + ", v_bits: 2}\n";
  return t;
}

TEST(Runner, AnExplicitPlanFileIsUsedAsIsAndItsContentIsPartOfTheId) {
  test::TempDir dir;
  g_calibrations = 0;
  std::ofstream(dir / "mine.yaml") << plan_text(2);
  const auto spec = ExperimentSpec::load(write_spec(dir, "methods:\n  - {name: test-runner-planned, params: {plan: mine.yaml}}\n"));
  const RunSummary s = run_experiment(spec, quiet());
  EXPECT_EQ(s.ran, 1);
  EXPECT_EQ(g_calibrations, 0);
  const auto cells = ResultsStore(s.store, ResultsStore::Mode::ReadOnly).cells();
  ASSERT_EQ(cells.size(), 1u);
  EXPECT_DOUBLE_EQ(cells[0].bits_k, 2 + 2.0);
  EXPECT_EQ(cells[0].config["method"]["params"]["plan"], "mine.yaml");
  EXPECT_EQ(cells[0].config["method"]["plan_sha256"].get<std::string>().size(), 64u);
  const std::string id = cells[0].cell_id;
  std::ofstream(dir / "mine.yaml") << plan_text(4);  // edited plan: another cell
  EXPECT_NE(build_grid(spec, GridOptions{}).cells[0].id, id);

  // Calibration parameters beside an explicit plan would be silently ignored: an error instead.
  const auto both = ExperimentSpec::load(
      write_spec(dir, "methods:\n  - {name: test-runner-planned, params: {plan: mine.yaml}, calibration: {samples: 3}}\n"));
  try {
    build_grid(both, GridOptions{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("t.yaml:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("plan: auto"), std::string::npos) << e.what();
  }
}

TEST(Runner, AFailingCellStopsTheRunOrIsSkippedWithKeepGoing) {
  test::TempDir dir;
  const auto spec = ExperimentSpec::load(write_spec(dir, R"(methods:
  - fp16
  - {name: test-runner-failing, sweep: {fail: [1, 0]}}
)"));
  try {
    run_experiment(spec, quiet());
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tiny/ppl/test-runner-failing fail=1"), std::string::npos) << m;
    EXPECT_NE(m.find("failing on purpose"), std::string::npos) << m;
  }
  // The cell before it is kept; nothing of the failed one is stored.
  EXPECT_EQ(ResultsStore(dir / "out/t.sqlite", ResultsStore::Mode::ReadOnly).count(), 1);
  RunOptions o = quiet();
  o.keep_going = true;
  const RunSummary s = run_experiment(spec, o);
  EXPECT_EQ(s.already_done, 1);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.ran, 1);
  ASSERT_EQ(s.failures.size(), 1u);
  EXPECT_NE(s.failures[0].find("fail=1"), std::string::npos);
  EXPECT_EQ(ResultsStore(dir / "out/t.sqlite", ResultsStore::Mode::ReadOnly).count(), 2);
}

TEST(Runner, ShardsTogetherRunTheGridOnce) {
  test::TempDir dir;
  const auto spec = ExperimentSpec::load(write_spec(dir, R"(methods:
  - fp16
  - {name: uniform, params: {group: 8}, sweep: {bits: [2, 4, 8]}}
)"));
  int64_t total = 0;
  std::set<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    RunOptions o = quiet();
    o.shard = Shard::parse(std::to_string(i) + "/2");
    o.store = dir / ("shard" + std::to_string(i) + ".sqlite");
    const RunSummary s = run_experiment(spec, o);
    total += s.ran;
    for (const auto& id : ResultsStore(o.store, ResultsStore::Mode::ReadOnly).cell_ids()) EXPECT_TRUE(ids.insert(id).second);
  }
  EXPECT_EQ(total, 4);
  EXPECT_EQ(ids.size(), 4u);
  // --skip-done-in: a later run into a fresh store skips what the shards did.
  RunOptions o = quiet();
  o.store = dir / "fresh.sqlite";
  o.skip_done_in = {dir / "shard0.sqlite", dir / "shard1.sqlite"};
  EXPECT_EQ(run_experiment(spec, o).ran, 0);
}

TEST(Runner, TheCellSeedReachesSeedParametersOnlyWhenTheSpecSetsIt) {
  test::TempDir dir;
  auto cells = [&](const std::string& methods) {
    return build_grid(ExperimentSpec::load(write_spec(dir, methods)), GridOptions{}).cells;
  };
  // No seed in the spec: the parameters keep their own defaults.
  auto c = cells("methods:\n  - {name: test-runner-seeded, params: {planless: 1}}\n");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].config["seed"], 0);
  EXPECT_EQ(c[0].config["method"]["params"]["seed"], 7);
  EXPECT_EQ(c[0].calibration, nullptr);  // works without a plan: no calibration
  // A swept seed sets the method's and the calibration step's seed.
  c = cells("methods:\n  - test-runner-seeded\nsweep:\n  seed: [1, 2]\n");
  ASSERT_EQ(c.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(c[i].config["method"]["params"]["seed"], i + 1);
    EXPECT_EQ(c[i].config["method"]["calibration"]["params"]["seed"], i + 1);
    EXPECT_NE(c[i].calibration, nullptr);  // needs its plan: calibrated
    EXPECT_EQ(c[i].config["method"]["params"]["plan"], "auto");
  }
  EXPECT_NE(c[0].calibration_key, c[1].calibration_key);
  // A fixed seed parameter stays; the cells still differ by their seed.
  c = cells("methods:\n  - {name: test-runner-seeded, params: {seed: 9, planless: 1}}\nsweep:\n  seed: [1, 2]\n");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].config["method"]["params"]["seed"], 9);
  EXPECT_EQ(c[1].config["method"]["params"]["seed"], 9);
  EXPECT_NE(c[0].id, c[1].id);
  EXPECT_EQ(c[1].slug, "tiny/ppl/test-runner-seeded seed=9,planless=1 seed=2");
  // A step that writes a folder: its outputs land in <plans>/<method>-<key>/output/.
  const auto spec = ExperimentSpec::load(write_spec(dir, "methods:\n  - test-runner-seeded\n"));
  EXPECT_EQ(run_experiment(spec, quiet()).calibrations, 1);
  const auto cell = build_grid(spec, GridOptions{}).cells.at(0);
  const std::string folder = calibration_plan_dir(dir / "out", "test-runner-seeded", cell.calibration_key);
  EXPECT_TRUE(std::filesystem::exists(folder + "/output/front.csv"));
  EXPECT_EQ(find_cached_plan(dir / "out", "test-runner-seeded", cell.calibration_key), folder + "/output/chosen.yaml");
  EXPECT_EQ(YAML::LoadFile(folder + "/output/chosen.yaml")["seed"].as<int>(), 42);  // its own default stands
  // A top-level seed: every free seed parameter.
  c = cells("seed: 5\nmethods:\n  - {name: test-runner-seeded, params: {planless: 1}}\n");
  EXPECT_EQ(c[0].config["method"]["params"]["seed"], 5);
}

}  // namespace
}  // namespace kvlab
