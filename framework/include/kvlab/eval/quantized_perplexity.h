#pragma once
// Perplexity under a quantized KV cache, against the full-precision model on the same windows:
// perplexity of both, KL(P_fp || P_quant) of the next-token distributions (mean and 99th
// percentile over predicted tokens), how often the top token stays the same, the mean change in the
// probability of the correct token, and the cache's measured bytes (bits per element for K and V,
// memory relative to a 16-bit cache holding the same tokens).
//
// Semantics: every window is fed token by token through the streaming cache (each step a decode
// step: append, flush, attend). Path::Stream does exactly that; Path::Fast computes the same thing
// in one masked pass per window (QuantizedLayerCache's TokenByToken mode).
#include <vector>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/eval/perplexity.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/cache_plan.h"

namespace kvlab {

struct QuantizedPerplexityResult {
  PerplexityResult reference;   // full-precision cache
  PerplexityResult quantized;   // the plan's cache
  double kl_mean = 0, kl_p99 = 0;
  double top1_agreement = 0;    // fraction of positions whose argmax is unchanged
  double delta_p_correct = 0;   // mean of p_quant(correct) - p_fp(correct)
  CacheBytes bytes;             // the cache at the end of a window (ctx tokens held)
  int64_t elements_per_kind = 0;  // numbers held for K (= for V) at that point, all layers
  double bits_k() const;
  double bits_v() const;
  double memory_ratio() const;  // bytes / bytes of a 16-bit cache of the same tokens
};

enum class PerplexityPath { Fast, Stream };

QuantizedPerplexityResult evaluate_quantized_perplexity(LlamaModel& model, const std::vector<int32_t>& tokens,
                                                        const PerplexityOptions& options, const CachePlan& plan,
                                                        PerplexityPath path = PerplexityPath::Fast);

}  // namespace kvlab
