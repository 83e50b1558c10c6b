// kvlab run SPEC.yaml: run an experiment's grid into its results store (kvlab/runner/runner.h);
// --dry-run prints the expanded grid and the number of cells without running anything.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <set>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/results/results_store.h"
#include "kvlab/results/results_table.h"
#include "kvlab/runner/runner.h"

namespace kvlab::cli {
namespace {

void print_dry_run(const ExperimentSpec& spec, const Grid& grid, const Shard& shard, const std::string& store_path) {
  std::set<std::string> done;
  if (std::filesystem::exists(store_path)) done = ResultsStore(store_path, ResultsStore::Mode::ReadOnly).cell_ids();
  size_t slug_width = 4;
  for (const auto& c : grid.cells) slug_width = std::max(slug_width, c.slug.size());
  fmt::print("experiment {} ({})\n", spec.name, spec.file);
  if (!spec.description.empty()) fmt::print("  {}\n", spec.description);
  fmt::print("store {}\n\n", store_path);
  fmt::print("{:>4}  {:<16}  {:>5}  {:<6}  {}\n", "#", "cell", "shard", "status", "slug");
  int64_t in_shard = 0, done_in_shard = 0;
  for (size_t i = 0; i < grid.cells.size(); ++i) {
    const Cell& c = grid.cells[i];
    const bool mine = shard.contains(i);
    const bool is_done = !c.id.empty() && done.count(c.id);
    if (mine) ++in_shard, done_in_shard += is_done ? 1 : 0;
    if (shard.count > 1 && !mine) continue;
    fmt::print("{:>4}  {:<16}  {:>5}  {:<6}  {}\n", i, c.id.empty() ? "(unknown)" : c.id,
               static_cast<int64_t>(i % shard.count), is_done ? "done" : "todo", c.slug);
  }
  for (const auto& n : grid.notes) fmt::print("note: {}\n", n);
  fmt::print("\n{} cells", grid.cells.size());
  if (grid.duplicates) fmt::print(" ({} grid points repeat an earlier cell's config)", grid.duplicates);
  if (shard.count > 1) fmt::print("; shard {}: {} cells", shard.str(), in_shard);
  fmt::print("; {} done, {} to run\n", done_in_shard, in_shard - done_in_shard);
}

}  // namespace

int run(const Args& args) {
  po::options_description desc("run options");
  desc.add_options()
    ("spec", po::value<std::string>()->required(), "experiment YAML")
    ("dry-run", "print the expanded grid (cell ids, slugs, done/todo) and the number of cells; run nothing")
    ("shard", po::value<std::string>()->default_value("0/1"), "run only shard i/n of the grid (cells with index % n == i)")
    ("store", po::value<std::string>(), "results store (default: the spec's 'store', else results/<name>.sqlite)")
    ("cache", po::value<std::string>(), "folder for prepared models and calibration plans (default: the store's folder)")
    ("skip-done-in", po::value<std::vector<std::string>>()->composing(),
     "another store whose finished cells count as done (repeatable)")
    ("threads", po::value<int>()->default_value(0), "CPU threads for LibTorch (0: all cores)")
    ("keep-going", "report a failing cell and go on with the others (exit code 1 at the end)")
    ("quiet", "no per-window progress lines from the tasks (the runner's line stays)")
    ("no-table", "do not print the results table at the end");
  po::positional_options_description pos;
  pos.add("spec", 1);
  auto vm = parse(args, desc, "kvlab run SPEC.yaml [--dry-run] [--shard i/n] [--store FILE]", &pos);
  if (!vm) return 0;

  const ExperimentSpec spec = ExperimentSpec::load((*vm)["spec"].as<std::string>());
  const Shard shard = Shard::parse((*vm)["shard"].as<std::string>());
  RunOptions opt;
  opt.store = vm->count("store") ? (*vm)["store"].as<std::string>() : spec.store_path();
  opt.cache = vm->count("cache") ? (*vm)["cache"].as<std::string>() : spec.cache_dir(opt.store);
  opt.shard = shard;
  opt.threads = (*vm)["threads"].as<int>();
  opt.keep_going = vm->count("keep-going") > 0;
  opt.task_progress = !vm->count("quiet");
  if (vm->count("skip-done-in")) opt.skip_done_in = (*vm)["skip-done-in"].as<std::vector<std::string>>();

  if (vm->count("dry-run")) {
    GridOptions g;
    g.allow_absent_models = true;
    g.cache_dir = opt.cache;
    print_dry_run(spec, build_grid(spec, g), shard, opt.store);
    return 0;
  }
  const RunSummary s = run_experiment(spec, opt);
  if (!vm->count("no-table")) {
    // This experiment's cells of this shard, as stored.
    const std::set<std::string> ids(s.shard_cell_ids.begin(), s.shard_cell_ids.end());
    std::vector<CellRecord> rows;
    for (auto& c : ResultsStore(s.store, ResultsStore::Mode::ReadOnly).cells())
      if (ids.count(c.cell_id)) rows.push_back(std::move(c));
    std::cout << "\n" << format_results_table(rows, {});
  }
  const std::string elsewhere =
      s.done_elsewhere ? fmt::format(", {} ran by another run meanwhile", s.done_elsewhere) : "";
  fmt::print("\n{} cells: {} ran now, {} already done{}, {} failed; results in {}\n", s.in_shard, s.ran,
             s.already_done, elsewhere, s.failed, s.store);
  for (const auto& f : s.failures) fmt::print(stderr, "failed: {}\n", f);
  return s.failed ? 1 : 0;
}

}  // namespace kvlab::cli
