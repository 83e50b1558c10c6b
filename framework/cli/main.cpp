// kvlab: one binary, one subcommand per task. Every error is one line on stderr and a non-zero exit.
#include <boost/program_options/errors.hpp>
#include <fmt/format.h>

#include <cstring>
#include <functional>
#include <map>

#include "commands.h"
#include "kvlab/common/error.h"

namespace {

struct Command {
  std::function<int(const kvlab::cli::Args&)> run;
  const char* help;
};

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> table = {
      {"make-model", {kvlab::cli::make_model, "write an HF-format checkpoint with random weights for a shape"}},
      {"generate", {kvlab::cli::generate, "greedy generation through any method's cache, with tokens/s and memory"}},
      {"eval", {kvlab::cli::eval, "evaluate a model: eval ppl | longbench | passkey | needle"}},
      {"bench", {kvlab::cli::bench, "bench throughput: generation tokens/s and memory per method and batch"}},
      {"longbench", {kvlab::cli::longbench, "longbench score PRED_DIR: score prediction files as LongBench's eval.py"}},
      {"methods", {kvlab::cli::methods, "list the KV-cache methods with their parameters and defaults"}},
      {"profile", {kvlab::cli::profile, "run a method's profiling step (profile kvmix ...) and write its plan"}},
      {"search", {kvlab::cli::search, "run a method's search step (search kvtuner ...) and write its plans"}},
      {"run", {kvlab::cli::run, "run an experiment (YAML: models x tasks x methods x sweep) into a results store"}},
      {"results", {kvlab::cli::results, "results show|export|merge: tables, CSV/JSONL, joining stores"}},
      {"slurm", {kvlab::cli::slurm, "write sbatch scripts running an experiment as an array of shards + a merge"}},
      {"train", {kvlab::cli::train, "train a Llama-architecture model from scratch on a text file (HF checkpoint out)"}},
      {"convert", {kvlab::cli::convert, "import a checkpoint: convert llama2c|gguf (llama2.c .bin or GGUF file -> HF layout)"}},
      {"plot", {kvlab::cli::plot, "figures from results or a plan: plot tradeoff|plan|importance|longbench"}},
  };
  return table;
}

void print_usage() {
  fmt::print("usage: kvlab <command> [options]   (kvlab <command> --help for its options)\n\ncommands:\n");
  for (const auto& [name, cmd] : commands()) fmt::print("  {:<12} {}\n", name, cmd.help);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  auto it = commands().find(name);
  if (it == commands().end()) {
    fmt::print(stderr, "kvlab: error: unknown command '{}' (run 'kvlab --help' for the list)\n", name);
    return 2;
  }
  try {
    return it->second.run(kvlab::cli::Args(argv + 2, argv + argc));
  } catch (const boost::program_options::error& e) {
    fmt::print(stderr, "kvlab {}: error: {}\n", name, e.what());
    return 2;
  } catch (const kvlab::Error& e) {
    fmt::print(stderr, "kvlab {}: error: {}\n", name, e.what());
    return 1;
  } catch (const std::exception& e) {
    // LibTorch errors carry a multi-line backtrace; keep the first line.
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    fmt::print(stderr, "kvlab {}: error: {}\n", name, msg);
    return 1;
  }
}
