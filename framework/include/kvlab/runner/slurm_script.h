#pragma once
// Slurm submission for an experiment: an sbatch array job whose task i runs shard i/n of the grid
// into its own store, and a merge job (afterok on the array) that joins the shard stores into the
// experiment's store. submit.sh submits both; extra arguments go to the merge job's sbatch (e.g.
// --wait to block until everything is merged).
#include <cstdint>
#include <string>
#include <vector>

#include "kvlab/runner/experiment_spec.h"

namespace kvlab {

struct SlurmOptions {
  int64_t array = 1;                  // number of shards / array tasks
  std::string out_dir;                // where the scripts, shard stores and logs go
  std::string kvlab_binary;           // absolute path of the kvlab executable the jobs run
  std::string store;                  // the merged store (absolute)
  std::string cache;                  // prepared models and calibration plans (absolute)
  int cpus_per_task = 1;
  std::string partition, time, mem, gres;   // passed as #SBATCH lines when set
  std::vector<std::string> extra;     // more #SBATCH options, e.g. "--account=x"
};

struct SlurmFiles {
  std::string array_script, merge_script, submit_script;
  std::vector<std::string> shard_stores;
};

SlurmFiles write_slurm_scripts(const ExperimentSpec& spec, const SlurmOptions& options);

// 'text' quoted for bash.
std::string shell_quote(const std::string& text);

}  // namespace kvlab
