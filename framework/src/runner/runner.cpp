#include "kvlab/runner/runner.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "kvlab/common/error.h"
#include "kvlab/common/progress.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/dtype.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/results/results_store.h"
#include "kvlab/runner/cell_claims.h"
#include "kvlab/runner/staging.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {
namespace fs = std::filesystem;

namespace {

std::string command_output(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  if (pclose(p) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "";
}

std::string describe_device(const c10::Device& device) {
  if (device.is_cpu()) {
    const std::string name = cpu_name();
    return fmt::format("cpu{} x{} threads", name.empty() ? "" : " (" + name + ")", at::get_num_threads());
  }
  return device.str();
}

// Runs a calibration step once per key: the plan lands in <cache>/plans/<method>-<key>/ with a
// calibration.json naming it and recording the inputs.
std::string calibrate_once(const Cell& cell, const std::string& cache_dir, LlamaModel& model, const Tokenizer& tok,
                           const std::string& model_dir, const std::string& base_dir, bool progress, bool& ran) {
  const CalibrationInfo& step = *cell.calibration;
  const std::string found = find_cached_plan(cache_dir, cell.method, cell.calibration_key);
  if (!found.empty()) return found;
  const std::string cwhere = cell.method_where + " calibration";
  const ParamSet params = ParamSet::resolve(step.params, expand_params(cell.calibration_params, base_dir, cwhere), cwhere);
  const std::string dir = calibration_plan_dir(cache_dir, cell.method, cell.calibration_key);
  build_once(dir, [&](const std::string& staging) {
    // Steps write a plan file at `out`, or a folder of outputs there and return the plan inside it
    // (kvtuner's search); such a folder is renamed "output".
    const fs::path out = fs::path(staging) / "plan.yaml";
    CalibrationContext ctx{model, tok, model_dir, params, out.string(), progress, fs::path(dir).parent_path().string()};
    fs::path plan = fs::path(step.run(ctx)).lexically_normal();
    if (fs::is_directory(out)) {
      const fs::path inside = plan.lexically_relative(out.lexically_normal());
      if (!inside.empty() && inside.string().rfind("..", 0) != 0) {
        fs::rename(out, fs::path(staging) / "output");
        plan = (fs::path(staging) / "output" / inside).lexically_normal();
      }
    }
    const fs::path rel = plan.lexically_relative(fs::path(staging).lexically_normal());
    if (rel.empty() || rel.string().rfind("..", 0) == 0)
      fail("calibration '{} {}' returned plan '{}' outside its output '{}'", step.verb, cell.method, plan.string(),
           ctx.out);
    if (!fs::exists(plan)) fail("calibration '{} {}' returned plan '{}', which does not exist", step.verb, cell.method,
                                plan.string());
    nlohmann::json record = {{"plan", rel.string()},
                             {"method", cell.method},
                             {"step", step.verb},
                             {"inputs", cell.config["method"]["calibration"]},
                             {"model", cell.config["model"]},
                             {"dtype", cell.config["dtype"]},
                             {"device", cell.config["device"]},
                             {"finished_at", utc_now_iso8601()}};
    std::ofstream(fs::path(staging) / "calibration.json") << record.dump(2) << "\n";
    ran = true;
  });
  return find_cached_plan(cache_dir, cell.method, cell.calibration_key);
}

// One cell: plan, task, record.
CellRecord run_cell(const ExperimentSpec& spec, const Cell& cell, LlamaModel& model, const Tokenizer& tok,
                    const std::string& model_dir, const std::string& cache_dir, const RunOptions& opt,
                    const std::string& git_rev, RunSummary& summary) {
  const auto t0 = std::chrono::steady_clock::now();
  YAML::Node method_params = expand_params(cell.method_params, spec.dir, cell.method_where);
  if (cell.calibration) {
    bool ran = false;
    const std::string plan =
        calibrate_once(cell, cache_dir, model, tok, model_dir, spec.dir, opt.task_progress && opt.log, ran);
    summary.calibrations += ran ? 1 : 0;
    YAML::Node with_plan(YAML::NodeType::Map);
    for (const auto& kv : method_params)
      if (kv.first.Scalar() != cell.calibration->plan_param) with_plan.force_insert(kv.first, kv.second);
    with_plan.force_insert(cell.calibration->plan_param, plan);
    method_params = with_plan;
  }
  auto method = MethodRegistry::instance().create(cell.method, method_params, cell.method_where);
  at::manual_seed(static_cast<uint64_t>(cell.seed));
  method->calibrate(model);
  const CachePlan plan = method->plan(model.config());
  plan.validate(model.config().num_hidden_layers, model.config().head_dim);

  auto task = TaskRegistry::instance().create(cell.task, expand_params(cell.task_params, "", cell.task_where),
                                              cell.task_where);
  TaskContext ctx{model, tok, model_dir, plan, spec.dir, opt.task_progress && opt.log != nullptr,
                  static_cast<uint64_t>(cell.seed)};
  at::manual_seed(static_cast<uint64_t>(cell.seed));
  const TaskResult r = task->run(ctx);

  CellRecord rec;
  rec.cell_id = cell.id;
  rec.experiment = spec.name;
  rec.slug = cell.slug;
  rec.model = spec.models[cell.model].name;
  rec.task = cell.task;
  rec.method = cell.method;
  rec.config = cell.config;
  rec.bits_k = r.bits_k;
  rec.bits_v = r.bits_v;
  rec.cache_bytes = r.cache_bytes;
  rec.memory_ratio = r.memory_ratio;
  for (const auto& m : r.metrics) {
    if (rec.metrics.count(m.name)) fail("task '{}' reported metric '{}' twice", cell.task, m.name);
    rec.metrics[m.name] = m.value;
  }
  rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rec.device = describe_device(model.device());
  rec.git_rev = git_rev;
  rec.finished_at = utc_now_iso8601();
  return rec;
}

std::string headline_metric(const CellRecord& r) {
  for (const char* name : {"ppl", "longbench/avg", "passkey/acc", "decode_tok_s"}) {
    auto it = r.metrics.find(name);
    if (it != r.metrics.end()) return fmt::format("{} {:.4g}", name, it->second);
  }
  if (!r.metrics.empty()) return fmt::format("{} {:.4g}", r.metrics.begin()->first, r.metrics.begin()->second);
  return "";
}

}  // namespace

std::string source_git_revision() {
  const std::string dir = KVLAB_SOURCE_DIR;
  const std::string rev = command_output("git -C '" + dir + "' rev-parse --short=12 HEAD 2>/dev/null");
  if (rev.empty()) return "unknown";
  const std::string dirty = command_output("git -C '" + dir + "' status --porcelain --untracked-files=no 2>/dev/null");
  return dirty.empty() ? rev : rev + "-dirty";
}

RunSummary run_experiment(const ExperimentSpec& spec, const RunOptions& opt) {
  RunSummary summary;
  summary.store = opt.store.empty() ? spec.store_path() : opt.store;
  const std::string cache_dir = opt.cache.empty() ? spec.cache_dir(summary.store) : opt.cache;
  set_threads(opt.threads);

  // Everything is checked before any work.
  GridOptions gopt;
  gopt.cache_dir = cache_dir;
  const Grid grid = build_grid(spec, gopt);
  for (const auto& m : spec.models) parse_device(m.device);
  summary.cells = static_cast<int64_t>(grid.cells.size());

  ResultsStore store(summary.store);
  std::set<std::string> done = store.cell_ids();
  for (const auto& other : opt.skip_done_in) {
    if (!fs::exists(other)) continue;
    const auto ids = ResultsStore(other, ResultsStore::Mode::ReadOnly).cell_ids();
    done.insert(ids.begin(), ids.end());
  }
  std::vector<const Cell*> todo;
  for (size_t i = 0; i < grid.cells.size(); ++i) {
    if (!opt.shard.contains(i)) continue;
    ++summary.in_shard;
    summary.shard_cell_ids.push_back(grid.cells[i].id);
    if (done.count(grid.cells[i].id)) ++summary.already_done;
    else todo.push_back(&grid.cells[i]);
  }
  if (opt.log)
    fmt::print(opt.log, "experiment {}: {} cells{}, {} already in {}, {} to run\n", spec.name, summary.cells,
               opt.shard.count > 1 ? fmt::format(" ({} in shard {})", summary.in_shard, opt.shard.str()) : "",
               summary.already_done, summary.store, todo.size());
  if (todo.empty()) return summary;

  const std::string git_rev = source_git_revision();
  Progress progress("run " + spec.name, static_cast<int64_t>(todo.size()), "cells", "", 1e9, opt.log);
  // Another run on this store may be computing some of these cells now: each cell is claimed
  // first (runner/cell_claims.h). Cells claimed elsewhere are put off to a second pass, which waits
  // for their claimer and runs only what it did not store.
  CellClaims claims(summary.store);
  std::vector<const Cell*> claimed_elsewhere;
  // The model of the cells being run, loaded once for its run of cells (cells are in model order).
  size_t loaded = grid.models.size();
  std::optional<LlamaModel> model;
  std::unique_ptr<Tokenizer> tok;
  std::string model_dir;
  auto run_here = [&](const Cell& cell) {
    if (loaded != cell.model) {
      const ModelEntry& entry = spec.models[cell.model];
      model.reset();
      model_dir = prepare_model(entry, grid.models[cell.model], cache_dir);
      LoadOptions load;
      load.dtype = parse_dtype(entry.dtype);
      load.device = parse_device(entry.device);
      model.emplace(LlamaModel::load(model_dir, load));
      tok = load_tokenizer(model_dir);
      loaded = cell.model;
    }
    progress.print_now(fmt::format("now: {} [{}]", cell.slug, cell.id));
    try {
      const CellRecord rec = run_cell(spec, cell, *model, *tok, model_dir, cache_dir, opt, git_rev, summary);
      store.insert(rec);
      ++summary.ran;
      progress.advance(1, fmt::format("last: {} {}", cell.slug, headline_metric(rec)));
    } catch (const std::exception& e) {
      // LibTorch errors carry a backtrace after the first line.
      std::string msg = e.what();
      msg = msg.substr(0, msg.find('\n'));
      if (!opt.keep_going) fail("cell {} ({}): {}", cell.id, cell.slug, msg);
      ++summary.failed;
      summary.failures.push_back(fmt::format("{} [{}]: {}", cell.slug, cell.id, msg));
      if (opt.log) fmt::print(opt.log, "cell failed: {} [{}]: {}\n", cell.slug, cell.id, msg);
      progress.advance(1, "failed: " + cell.slug);
    }
  };
  // With the claim held: stored meanwhile by another run, or run here.
  auto settle = [&](const Cell& cell) {
    ClaimRelease release(claims, cell.id);
    if (store.has(cell.id)) {
      ++summary.done_elsewhere;
      progress.advance(1, "stored by another run: " + cell.slug);
      return;
    }
    run_here(cell);
  };
  for (const Cell* cell : todo) {
    if (claims.try_claim(cell->id)) settle(*cell);
    else claimed_elsewhere.push_back(cell);
  }
  for (const Cell* cell : claimed_elsewhere) {
    if (!claims.try_claim(cell->id)) {
      progress.print_now(fmt::format("waiting for another run to finish {} [{}]", cell->slug, cell->id));
      claims.claim_waiting(cell->id);
    }
    settle(*cell);
  }
  progress.finish(fmt::format("{} ran, {} failed{}", summary.ran, summary.failed,
                              summary.done_elsewhere ? fmt::format(", {} by another run", summary.done_elsewhere) : ""));
  return summary;
}

}  // namespace kvlab
