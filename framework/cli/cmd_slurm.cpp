// kvlab slurm SPEC.yaml --array n: write the sbatch scripts that run an experiment's grid as n
// array tasks (one shard each, its own store) and merge them (kvlab/runner/slurm_script.h).
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/runner/slurm_script.h"
#include "kvlab/runner/sweep.h"

namespace kvlab::cli {
namespace fs = std::filesystem;

int slurm(const Args& args) {
  po::options_description desc("slurm options");
  desc.add_options()
    ("spec", po::value<std::string>()->required(), "experiment YAML")
    ("array", po::value<int64_t>()->required(), "number of array tasks (shards)")
    ("out", po::value<std::string>(), "folder for the scripts, shard stores and logs (default: <store folder>/slurm-<name>)")
    ("store", po::value<std::string>(), "the merged store (default: the spec's)")
    ("cache", po::value<std::string>(), "prepared models and calibration plans (default: the store's folder)")
    ("cpus-per-task", po::value<int>()->default_value(1), "CPUs per array task (also its LibTorch threads)")
    ("partition", po::value<std::string>(), "#SBATCH --partition")
    ("time", po::value<std::string>(), "#SBATCH --time (e.g. 04:00:00)")
    ("mem", po::value<std::string>(), "#SBATCH --mem (e.g. 32G)")
    ("gres", po::value<std::string>(), "#SBATCH --gres (e.g. gpu:1)")
    ("sbatch", po::value<std::vector<std::string>>()->composing(), "another #SBATCH option, e.g. --sbatch=--account=x")
    ("kvlab", po::value<std::string>(), "the kvlab binary the jobs run (default: this one)");
  po::positional_options_description pos;
  pos.add("spec", 1);
  auto vm = parse(args, desc, "kvlab slurm SPEC.yaml --array N [--out DIR] [--partition P] [--time T]", &pos);
  if (!vm) return 0;

  const ExperimentSpec spec = ExperimentSpec::load((*vm)["spec"].as<std::string>());
  SlurmOptions o;
  o.array = (*vm)["array"].as<int64_t>();
  o.store = fs::absolute(vm->count("store") ? (*vm)["store"].as<std::string>() : spec.store_path()).lexically_normal().string();
  o.cache = fs::absolute(vm->count("cache") ? (*vm)["cache"].as<std::string>() : spec.cache_dir(o.store)).lexically_normal().string();
  o.out_dir = vm->count("out") ? (*vm)["out"].as<std::string>()
                               : (fs::path(o.store).parent_path() / ("slurm-" + spec.name)).string();
  o.cpus_per_task = (*vm)["cpus-per-task"].as<int>();
  if (vm->count("partition")) o.partition = (*vm)["partition"].as<std::string>();
  if (vm->count("time")) o.time = (*vm)["time"].as<std::string>();
  if (vm->count("mem")) o.mem = (*vm)["mem"].as<std::string>();
  if (vm->count("gres")) o.gres = (*vm)["gres"].as<std::string>();
  if (vm->count("sbatch")) o.extra = (*vm)["sbatch"].as<std::vector<std::string>>();
  if (vm->count("kvlab")) {
    o.kvlab_binary = fs::absolute((*vm)["kvlab"].as<std::string>()).string();
  } else {
    o.kvlab_binary = fs::read_symlink("/proc/self/exe").string();
  }

  // The grid is checked now, so a bad spec fails here and not in n jobs.
  GridOptions g;
  g.allow_absent_models = true;
  g.cache_dir = o.cache;
  const Grid grid = build_grid(spec, g);
  if (o.array > static_cast<int64_t>(grid.cells.size()))
    fail("--array {} exceeds the grid's {} cells (some tasks would have nothing to do)", o.array, grid.cells.size());
  const SlurmFiles f = write_slurm_scripts(spec, o);
  fmt::print("experiment {}: {} cells in {} shards ({} to {} cells each)\n", spec.name, grid.cells.size(), o.array,
             grid.cells.size() / o.array, (grid.cells.size() + o.array - 1) / o.array);
  fmt::print("wrote {}\n      {}\n      {}\n", f.array_script, f.merge_script, f.submit_script);
  fmt::print("submit: bash {}   (the merged results land in {})\n", shell_quote(f.submit_script), o.store);
  return 0;
}

}  // namespace kvlab::cli
