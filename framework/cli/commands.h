#pragma once
// The kvlab subcommands. Each takes the arguments after its name and returns an exit code;
// errors are thrown as kvlab::Error (or boost::program_options errors) and printed by main.
#include <string>
#include <vector>

namespace kvlab::cli {

using Args = std::vector<std::string>;

int make_model(const Args& args);
int generate(const Args& args);
int eval(const Args& args);
int convert(const Args& args);
int methods(const Args& args);
int profile(const Args& args);   // a method's calibration step (kvlab/quant/calibration.h)
int search(const Args& args);
int run(const Args& args);       // an experiment spec (kvlab/runner/)
int results(const Args& args);   // results show|export|merge
int slurm(const Args& args);     // sbatch scripts for an experiment's shards
int train(const Args& args);

}  // namespace kvlab::cli
