#pragma once
// LongBench generation and scoring under one cache plan: for each task, build every record's
// prompt (prompt.h), generate greedily through a fresh cache of the plan, score the predictions
// exactly as the benchmark's scorer does (scorer.h), and measure what the cache held.
//
// Batching: prompts are batched only with prompts of the same token length (greedy_generate
// takes a rectangular batch and the model has no padding mask), up to `batch` at a time, so a
// batch computes exactly what one-at-a-time generation computes. LongBench prompts rarely share a
// length; synthetic ones (passkey) always do.
#include <cstdint>
#include <string>
#include <vector>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/eval/longbench/prompt.h"
#include "kvlab/eval/longbench/scorer.h"
#include "kvlab/quant/cache_plan.h"

namespace kvlab {
class LlamaModel;
class Tokenizer;
}  // namespace kvlab

namespace kvlab::longbench {

struct EvalOptions {
  std::string data_dir;             // holds <task>.jsonl (or <task>_e.jsonl)
  std::vector<std::string> tasks;   // names from task_spec.h
  bool longbench_e = false;         // read <task>_e.jsonl; report the length buckets
  int64_t max_samples = -1;         // the first N records of each task (< 0: all)
  int64_t max_length = 0;           // prompt budget in tokens; <= 0: the model's context minus the task's generation length
  ChatStyle chat = ChatStyle::None;
  std::optional<std::string> chat_system;  // ChatML's system turn (prompt.h: resolve_chat_system)
  int64_t batch = 1;                // most prompts (of one length) generated together
  int64_t max_new_tokens = 0;       // > 0: overrides the benchmark's per-task generation length
  std::vector<int64_t> stop_ids;    // end-of-sequence ids (stop_tokens.h)
  std::string out_dir;              // when set: <out_dir>/<task>.jsonl predictions, written per finished task
  bool progress = true;
};

struct TaskRun {
  TaskScore score;
  int64_t max_length = 0;          // the prompt budget used
  int64_t max_new_tokens = 0;
  int64_t truncated = 0;           // records whose prompt was cut in the middle
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

struct EvalResult {
  std::vector<TaskRun> tasks;      // in the order asked
  double average = 0;              // mean of the task scores, 2 decimals
  CacheBytes bytes;                // summed over every generation batch, measured when it ends
  int64_t elements_per_kind = 0;   // K (= V) numbers the caches held at those points, summed
  int64_t max_cache_bytes = 0;     // the largest single cache
  double seconds = 0;
  double bits_k() const;
  double bits_v() const;
  double memory_ratio() const;     // bytes / bytes of a 16-bit cache of the same tokens
};

EvalResult evaluate_longbench(LlamaModel& model, const Tokenizer& tokenizer, const CachePlan& plan,
                              const EvalOptions& options);

}  // namespace kvlab::longbench
