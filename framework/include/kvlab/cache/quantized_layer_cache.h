#pragma once
// The streaming quantized cache of one layer (METHODS.md section 2): K and V each a QuantizedStream
// (packed oldest tokens + full-precision newest), flushed by the plan's rules after every append.
//
// Decode (one new token): append, flush, then attention reads the packed K/V directly
// (kernels::packed_decode_attention) plus the full-precision parts.
// Multi-token forwards follow plan.prefill:
//   FullPrecision  attention over the chunk uses the exact K/V of its tokens (history already
//                  packed is read dequantized); then append + flush. (KIVI / KVmix reference codes.)
//   Quantized      append + flush first, then attention reads the cache as stored. (llama.cpp.)
//   TokenByToken   exactly what feeding the tokens one at a time would compute: every query sees
//                  each key/value in the state (packed or exact) it would have at that query's own
//                  step, via a masked computation over one pass. Used by perplexity evaluation.
#include <memory>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/cache/quantized_stream.h"
#include "kvlab/quant/cache_plan.h"

namespace kvlab {

enum class MultiTokenMode { FullPrecision, Quantized, TokenByToken };

class QuantizedLayerCache : public LayerCache {
 public:
  QuantizedLayerCache(const LayerPlan& plan, MultiTokenMode mode);

  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  void fill(const at::Tensor& k, const at::Tensor& v) override;  // append + flush, as a prefill leaves them
  int64_t length() const override { return keys_.tokens(); }
  CacheBytes bytes() const override;
  int64_t capacity_bytes() const override;
  void reset() override;

  const QuantizedStream& keys() const { return keys_; }
  const QuantizedStream& values() const { return values_; }
  MultiTokenMode mode() const { return mode_; }
  void set_mode(MultiTokenMode m) { mode_ = m; }

 private:
  at::Tensor decode_attention(const at::Tensor& q);
  at::Tensor token_by_token_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);
  QuantizedStream keys_, values_;
  MultiTokenMode mode_;
};

// A KvCache that executes a plan (layers whose K and V are both unquantized get the plain
// full-precision cache; a layer whose plan rotates a quantized stream is wrapped in a
// RotatingLayerCache, rotating_layer_cache.h).
KvCache make_cache(const CachePlan& plan, MultiTokenMode mode);
MultiTokenMode multi_token_mode(PrefillAttention p);

}  // namespace kvlab
