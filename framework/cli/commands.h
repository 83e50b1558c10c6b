#pragma once
// The kvlab subcommands. Each takes the arguments after its name and returns an exit code;
// errors are thrown as kvlab::Error (or boost::program_options errors) and printed by main.
#include <string>
#include <vector>

#include "kvlab/eval/passkey.h"

namespace kvlab::cli {

using Args = std::vector<std::string>;

int make_model(const Args& args);
int generate(const Args& args);
int eval(const Args& args);
int bench(const Args& args);     // bench throughput (cmd_bench_throughput.cpp)
int convert(const Args& args);
int methods(const Args& args);
int profile(const Args& args);   // a method's calibration step (kvlab/quant/calibration.h)
int search(const Args& args);
int run(const Args& args);       // an experiment spec (kvlab/runner/)
int results(const Args& args);   // results show|export|merge
int slurm(const Args& args);     // sbatch scripts for an experiment's shards
int train(const Args& args);
int plot(const Args& args);      // runs the matplotlib scripts in plots/
int longbench(const Args& args);  // longbench score PRED_DIR

// Bodies of `kvlab eval <task>` beyond ppl (cmd_eval_longbench.cpp).
int eval_longbench(const Args& args);
int eval_synthetic(const Args& args, SyntheticKind kind);

}  // namespace kvlab::cli
