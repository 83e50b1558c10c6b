// kvlab longbench score PRED_DIR: scores prediction files (one <task>.jsonl per task, records
// {pred, answers, all_classes, length}) exactly as LongBench's eval.py does, so predictions made
// elsewhere (the benchmark's own pred.py, another framework) score identically.
#include <fmt/format.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/scorer.h"

namespace kvlab::cli {
namespace {

nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

int score(const Args& args) {
  po::options_description desc("longbench score options");
  desc.add_options()
    ("dir", po::value<std::string>()->required(), "directory of <task>.jsonl prediction files")
    ("e", "also print LongBench-E's length buckets (0-4k / 4-8k / 8k+, from each record's length)")
    ("json", "print {task: score, ..., average} as JSON (with --e: {task: {0-4k, 4-8k, 8k+}})");
  po::positional_options_description pos;
  pos.add("dir", 1);
  auto vm = parse(args, desc, "kvlab longbench score PRED_DIR [--e] [--json]", &pos);
  if (!vm) return 0;
  const bool e = vm->count("e") > 0;
  const longbench::DirectoryScores d = longbench::score_prediction_dir((*vm)["dir"].as<std::string>());
  for (const auto& s : d.skipped) fmt::print(stderr, "skipped {}\n", s);
  for (const auto& t : d.tasks)
    if (e && !t.has_lengths) fail("--e: the predictions of {} lack the 'length' field", t.task);

  if (vm->count("json")) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& t : d.tasks) {
      if (e) {
        for (size_t b = 0; b < 3; ++b) j[t.task][longbench::kLengthBuckets[b]] = number_or_null(t.buckets[b]);
      } else {
        j[t.task] = t.score;
      }
    }
    j["average"] = d.average;
    std::cout << j.dump(1) << "\n";
    return 0;
  }
  fmt::print("{:<22} {:>7} {:>8}{}\n", "task", "records", "score", e ? "     0-4k     4-8k      8k+" : "");
  for (const auto& t : d.tasks) {
    std::string buckets;
    if (e)
      for (double b : t.buckets) buckets += std::isnan(b) ? fmt::format(" {:>8}", "-") : fmt::format(" {:>8.2f}", b);
    fmt::print("{:<22} {:>7} {:>8.2f}{}\n", t.task, t.records, t.score, buckets);
  }
  fmt::print("{:<22} {:>7} {:>8.2f}   ({} tasks)\n", "average", "", d.average, d.tasks.size());
  return 0;
}

}  // namespace

int longbench(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("usage: kvlab longbench <action> [options]\n\nactions:\n"
               "  score PRED_DIR   score <task>.jsonl prediction files as LongBench's eval.py does\n");
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "score") return score(Args(args.begin() + 1, args.end()));
  fail("unknown longbench action '{}' (valid: score)", args[0]);
}

}  // namespace kvlab::cli
