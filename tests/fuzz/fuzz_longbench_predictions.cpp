// LongBench prediction files, read and scored under every task's metric (F1, ROUGE-L,
// classification, retrieval, count, code edit similarity), as `kvlab longbench score` does.
#include <cmath>

#include "fuzz_input.h"
#include "kvlab/eval/longbench/scorer.h"
#include "kvlab/eval/longbench/task_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "pred.jsonl");
  kvlab::fuzz::run_parser([&] {
    const auto predictions = kvlab::longbench::read_predictions(path);
    for (const auto& task : kvlab::longbench::english_tasks()) {
      kvlab::fuzz::run_parser([&] {
        const auto score = kvlab::longbench::score_task(task, predictions, path);
        if (!(score.score >= 0 && score.score <= 100)) std::abort();
      });
    }
  });
  return 0;
}
