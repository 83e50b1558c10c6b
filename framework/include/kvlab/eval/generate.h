#pragma once
// Greedy decoding: one prefill of the prompts, then one batched decode step per new token.
#include <cstdint>
#include <optional>
#include <vector>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/model/llama_model.h"

namespace kvlab {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  std::vector<int64_t> stop_ids;    // a sequence stops after emitting one of these
  int64_t min_new_tokens = 0;       // stop ids are masked out of the first this-many steps (HF min_length)
  bool prefill_token_by_token = false;  // feed the prompt one token at a time (a check of decode)
};

struct GenerateResult {
  std::vector<std::vector<int64_t>> tokens;  // per sequence, generated ids only (stop id included)
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t decode_steps = 0;
  double decode_tokens_per_second() const;   // batch * steps / decode time
};

// Prompts must share one length (batches of equal-length prompts; pad upstream otherwise).
GenerateResult greedy_generate(LlamaModel& model, KvCache& cache,
                               const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& options);

}  // namespace kvlab
