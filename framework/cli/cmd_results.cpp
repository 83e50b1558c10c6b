// kvlab results show|export|merge: read, export and join results stores (kvlab/results/).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <iostream>
#include <set>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/results/results_store.h"
#include "kvlab/results/results_table.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/sweep.h"

namespace kvlab::cli {
namespace fs = std::filesystem;
namespace {

// A store named directly, through an experiment spec (its store), or the only one in ./results.
std::string store_argument(const po::variables_map& vm) {
  if (vm.count("store")) {
    const std::string s = vm["store"].as<std::string>();
    const std::string ext = fs::path(s).extension().string();
    if (ext == ".yaml" || ext == ".yml") return ExperimentSpec::load(s).store_path();
    return s;
  }
  std::vector<std::string> found;
  if (fs::is_directory("results"))
    for (const auto& e : fs::directory_iterator("results"))
      if (e.path().extension() == ".sqlite") found.push_back(e.path().string());
  if (found.size() == 1) return found[0];
  if (found.empty()) fail("no store given and none in ./results (pass STORE.sqlite or an experiment's SPEC.yaml)");
  std::sort(found.begin(), found.end());
  std::string list;
  for (const auto& f : found) list += (list.empty() ? "" : ", ") + f;
  fail("several stores in ./results ({}): name one", list);
}

void add_selection(po::options_description& desc) {
  desc.add_options()
    ("store", po::value<std::string>(), "results store (.sqlite) or experiment spec (.yaml: its store)")
    ("where", po::value<std::vector<std::string>>()->composing(),
     "key=value filter (repeatable, all must hold): experiment, model, task, method, cell, slug, seed, or a "
     "parameter (bits, method.group, task.ctx, calibration.samples ...)")
    ("grid", "with a SPEC.yaml: only the cells of that spec's grid, whichever run or spec stored them (specs "
             "sharing a store share cells)");
}

// The ids of the grid of the spec named by --store (for --grid).
std::set<std::string> grid_ids(const po::variables_map& vm) {
  const std::string s = vm.count("store") ? vm["store"].as<std::string>() : "";
  const std::string ext = fs::path(s).extension().string();
  if (ext != ".yaml" && ext != ".yml") fail("--grid needs an experiment spec (SPEC.yaml) where the store is named, not {}", s.empty() ? "no store" : s);
  const ExperimentSpec spec = ExperimentSpec::load(s);
  GridOptions g;
  g.cache_dir = spec.cache_dir(spec.store_path());
  std::set<std::string> ids;
  for (const Cell& c : build_grid(spec, g).cells) ids.insert(c.id);
  return ids;
}

std::vector<CellRecord> selected(const po::variables_map& vm, const ResultsStore& store) {
  auto all = store.cells();
  if (vm.count("grid")) {
    const std::set<std::string> ids = grid_ids(vm);
    all.erase(std::remove_if(all.begin(), all.end(), [&](const CellRecord& c) { return !ids.count(c.cell_id); }),
              all.end());
  }
  const CellFilter filter(vm.count("where") ? vm["where"].as<std::vector<std::string>>() : std::vector<std::string>{});
  if (!all.empty()) filter.check_keys(all);
  return filter.apply(all);
}

int show(const Args& args) {
  po::options_description desc("results show options");
  add_selection(desc);
  desc.add_options()("metric", po::value<std::vector<std::string>>()->composing(),
                     "metric column to show (repeatable; default: all)");
  po::positional_options_description pos;
  pos.add("store", 1);
  auto vm = parse(args, desc, "kvlab results show [STORE|SPEC] [--where k=v] [--metric m]", &pos);
  if (!vm) return 0;
  const ResultsStore store(store_argument(*vm), ResultsStore::Mode::ReadOnly);
  const auto cells = selected(*vm, store);
  const auto metrics = vm->count("metric") ? (*vm)["metric"].as<std::vector<std::string>>() : std::vector<std::string>{};
  std::cout << format_results_table(cells, metrics);
  fmt::print("{} of {} cells in {}\n", cells.size(), store.count(), store.path());
  return 0;
}

int export_cells(const Args& args) {
  po::options_description desc("results export options");
  add_selection(desc);
  desc.add_options()("csv", po::value<std::string>(), "write CSV (one row per cell, a column per parameter and metric)")
                    ("jsonl", po::value<std::string>(), "write JSON lines (one object per cell with config and metrics)");
  po::positional_options_description pos;
  pos.add("store", 1);
  auto vm = parse(args, desc, "kvlab results export [STORE|SPEC] --csv FILE | --jsonl FILE", &pos);
  if (!vm) return 0;
  if (!vm->count("csv") && !vm->count("jsonl")) fail("results export: give --csv FILE and/or --jsonl FILE");
  const ResultsStore store(store_argument(*vm), ResultsStore::Mode::ReadOnly);
  const auto cells = selected(*vm, store);
  if (vm->count("csv")) {
    export_csv(cells, (*vm)["csv"].as<std::string>());
    fmt::print("wrote {} ({} cells)\n", (*vm)["csv"].as<std::string>(), cells.size());
  }
  if (vm->count("jsonl")) {
    export_jsonl(cells, (*vm)["jsonl"].as<std::string>());
    fmt::print("wrote {} ({} cells)\n", (*vm)["jsonl"].as<std::string>(), cells.size());
  }
  return 0;
}

int merge(const Args& args) {
  po::options_description desc("results merge options");
  desc.add_options()("inputs", po::value<std::vector<std::string>>()->composing(), "stores to merge")
                    ("out", po::value<std::string>()->required(),
                     "the merged store (created, or added to: cells already there are kept)");
  po::positional_options_description pos;
  pos.add("inputs", -1);
  auto vm = parse(args, desc, "kvlab results merge A.sqlite B.sqlite ... --out C.sqlite", &pos);
  if (!vm) return 0;
  if (!vm->count("inputs")) fail("results merge: name the stores to merge");
  const auto inputs = (*vm)["inputs"].as<std::vector<std::string>>();
  const std::string out = (*vm)["out"].as<std::string>();
  // Open every input first: a missing or foreign file fails before anything is written.
  std::vector<std::unique_ptr<ResultsStore>> sources;
  for (const auto& in : inputs) {
    if (fs::exists(out) && fs::exists(in) && fs::equivalent(in, out)) fail("results merge: input {} is the output", in);
    sources.push_back(std::make_unique<ResultsStore>(in, ResultsStore::Mode::ReadOnly));
  }
  std::vector<const ResultsStore*> from;
  for (const auto& s : sources) from.push_back(s.get());
  auto report = [&](const ResultsStore& target, const std::vector<int64_t>& added) {
    int64_t total = 0;
    for (size_t i = 0; i < sources.size(); ++i) {
      fmt::print("{}: {} cells, {} new\n", sources[i]->path(), sources[i]->count(), added[i]);
      total += added[i];
    }
    fmt::print("{}: {} cells ({} added)\n", out, target.count(), total);
  };
  if (fs::exists(out)) {
    // One transaction: a conflict leaves the store exactly as it was.
    ResultsStore target(out);
    report(target, target.merge_from(from));
    return 0;
  }
  // A new store is built beside its final name and linked into place only when complete, so a
  // conflict (or a kill) never leaves a partial store under that name.
  const fs::path final_path = fs::absolute(out);
  fs::create_directories(final_path.parent_path());
  const std::string temp =
      (final_path.parent_path() / fmt::format(".{}.merging-{}", final_path.filename().string(), getpid())).string();
  auto remove_temp = [&] {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(temp + suffix, ec);
  };
  try {
    std::vector<int64_t> added;
    {
      ResultsStore target(temp);
      added = target.merge_from(from);
    }
    // link() refuses to replace a store that appeared meanwhile (rename would drop it).
    if (link(temp.c_str(), final_path.c_str()) != 0) {
      if (errno == EEXIST) fail("results merge: {} appeared while merging; run the merge again to add to it", out);
      fs::rename(temp, final_path);
    }
    remove_temp();
    report(ResultsStore(out, ResultsStore::Mode::ReadOnly), added);
  } catch (...) {
    remove_temp();
    throw;
  }
  return 0;
}

}  // namespace

int results(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("usage: kvlab results <show|export|merge> [options]\n\n"
               "  show    an aligned table of the stored cells (--where k=v, --metric m)\n"
               "  export  --csv FILE / --jsonl FILE\n"
               "  merge   A B ... --out C: join stores (same cell twice: kept once; different results: error)\n");
    return args.empty() ? 2 : 0;
  }
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "show") return show(rest);
  if (args[0] == "export") return export_cells(rest);
  if (args[0] == "merge") return merge(rest);
  fail("unknown results command '{}' (valid: show, export, merge)", args[0]);
}

}  // namespace kvlab::cli
