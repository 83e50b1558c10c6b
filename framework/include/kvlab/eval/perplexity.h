#pragma once
// Perplexity over non-overlapping windows, the protocol of the KV-quantization papers: the token
// stream is cut into windows of `ctx` tokens (a final partial window is dropped, as the papers do),
// each window is one fresh sequence, and every token after a window's first is predicted:
// ppl = exp(mean NLL over all predicted tokens).
// With bos_id set, each window is BOS + (ctx - 1) text tokens and all ctx - 1 text tokens are
// predicted (the first from BOS alone), for models trained with BOS at every sequence start.
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/model/llama_model.h"

namespace kvlab {

struct PerplexityOptions {
  int64_t ctx = 2048;                   // window length L, in tokens (BOS included when used)
  int64_t max_windows = -1;             // <= 0: every full window
  std::optional<int32_t> bos_id;        // prepend BOS to every window
  bool progress = true;                 // progress line on stderr
};

struct PerplexityResult {
  double nll_sum = 0;       // sum of -log p(token) over predicted tokens
  int64_t predicted = 0;    // tokens predicted
  int64_t windows = 0;
  double seconds = 0;
  double ppl() const;
  double mean_nll() const;
  double tokens_per_second() const;  // tokens fed through the model per second
};

// Cuts `tokens` into windows per the options; each window is a vector of ids (BOS included).
std::vector<std::vector<int64_t>> perplexity_windows(const std::vector<int32_t>& tokens,
                                                     const PerplexityOptions& options);

// Full-precision perplexity: one prefill per window through a fresh cache from make_cache.
PerplexityResult evaluate_perplexity(LlamaModel& model, const std::vector<int32_t>& tokens,
                                     const PerplexityOptions& options,
                                     const std::function<KvCache()>& make_cache = nullptr);

// Sum of -log softmax(logits)[target] over rows. logits: [N, V] fp32; targets: [N] int64.
double nll_sum(const at::Tensor& logits, const at::Tensor& targets);
// Rows of a window whose logits the evaluators hold at once (the LM head runs on blocks of them).
constexpr int64_t kHeadRows = 64;

}  // namespace kvlab
