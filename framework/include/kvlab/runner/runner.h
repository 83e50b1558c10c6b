#pragma once
// Runs an experiment's grid into a results store: cells already stored are skipped, each finished
// cell is written in one transaction (a process killed at any moment loses at most the cell in
// flight), a progress line shows cells done, the current cell, rate and ETA. Several runs on one
// store share the work: each cell is computed by one of them (runner/cell_claims.h). Models are prepared
// (converted / generated) and calibration steps run once and are cached under the cache folder,
// keyed by their inputs, so shards and re-runs reuse them.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/sweep.h"

namespace kvlab {

struct RunOptions {
  std::string store;                      // "" = spec.store_path()
  std::string cache;                      // "" = spec.cache_dir(store)
  Shard shard;                            // this process's slice of the grid
  int threads = 0;                        // LibTorch CPU threads (0: all cores)
  bool task_progress = true;              // the tasks' own progress lines
  bool keep_going = false;                // a failing cell is reported and skipped instead of stopping
  std::vector<std::string> skip_done_in;  // other stores whose finished cells count as done
  std::FILE* log = stderr;                // progress and messages (nullptr: silent)
};

struct RunSummary {
  std::string store;
  int64_t cells = 0;          // in the whole grid
  int64_t in_shard = 0;       // in this shard
  int64_t already_done = 0;   // skipped: already stored
  int64_t ran = 0;            // finished now
  int64_t done_elsewhere = 0; // stored meanwhile by another run on the same store (cell_claims.h)
  int64_t failed = 0;         // with keep_going
  int64_t calibrations = 0;   // calibration steps run now (not found in the cache)
  std::vector<std::string> failures;  // "slug: error"
  std::vector<std::string> shard_cell_ids;  // this shard's cells, in grid order (done or not)
};

RunSummary run_experiment(const ExperimentSpec& spec, const RunOptions& options);

// The source tree's git revision ("<12 hex>" plus "-dirty" with local changes), or "unknown".
std::string source_git_revision();

}  // namespace kvlab
