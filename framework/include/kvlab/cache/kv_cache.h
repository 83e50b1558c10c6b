#pragma once
// The seam between the model and the KV cache. Attention never touches past keys/values directly:
// each layer hands its new queries/keys/values to its LayerCache, which stores K/V however its
// method says (full precision here; packed low-bit in quantizing caches) and returns the attention
// output. Everything is per layer and per kv-head: K/V arrive as [batch, kv_heads, tokens, head_dim]
// and are never expanded to query heads (GQA memory would be counted wrongly).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvlab {

// Bytes actually held for one of K or V, by kind. Nothing is estimated: each figure is the size of
// the data the cache keeps for the tokens it holds (not spare capacity; see capacity_bytes).
struct ByteBreakdown {
  int64_t packed_codes = 0;     // low-bit codes of quantized tokens
  int64_t scales_zeros = 0;     // per-group scale and zero point
  int64_t full_precision = 0;   // tokens kept in the model's dtype (window, sinks, fp16 cache)
  int64_t metadata = 0;         // index lists and the like (e.g. high-precision channel ids)
  int64_t total() const { return packed_codes + scales_zeros + full_precision + metadata; }
  ByteBreakdown& operator+=(const ByteBreakdown& o);
};

struct CacheBytes {
  ByteBreakdown keys, values;
  int64_t total() const { return keys.total() + values.total(); }
  CacheBytes& operator+=(const CacheBytes& o);
};

class LayerCache {
 public:
  virtual ~LayerCache() = default;

  // q: [B, Hq, T, D] new queries; k, v: [B, Hkv, T, D] new keys (after RoPE) and values.
  // Appends k and v after the tokens already held and returns the attention output [B, Hq, T, D]:
  // query t attends to every held token and to new tokens 0..t (causal). Hq % Hkv == 0.
  virtual at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) = 0;

  // Appends k, v [B, Hkv, T, D] and stores them as a multi-token forward would, without computing
  // attention: synthetic cache fills for throughput runs on random weights. A cache that cannot
  // (none of the built-in ones) says so.
  virtual void fill(const at::Tensor& k, const at::Tensor& v);

  virtual int64_t length() const = 0;          // tokens held (per sequence)
  virtual CacheBytes bytes() const = 0;        // exact bytes held for those tokens
  virtual int64_t capacity_bytes() const { return bytes().total(); }  // incl. spare capacity
  virtual void reset() = 0;                    // drop every token
};

using LayerCacheFactory = std::function<std::unique_ptr<LayerCache>(int64_t layer)>;

// One LayerCache per transformer layer.
class KvCache {
 public:
  KvCache(int64_t num_layers, const LayerCacheFactory& make_layer);
  // The reference cache: every token in the model's dtype.
  static KvCache full_precision(int64_t num_layers);

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  LayerCache& layer(int64_t i) { return *layers_.at(static_cast<size_t>(i)); }
  const LayerCache& layer(int64_t i) const { return *layers_.at(static_cast<size_t>(i)); }
  int64_t length() const;       // tokens held (layer 0; all layers agree)
  CacheBytes bytes() const;     // summed over layers
  void reset();

 private:
  std::vector<std::unique_ptr<LayerCache>> layers_;
};

// Full-precision cache: K/V in the dtype they arrive in (the model's), in buffers that grow by
// doubling so a decode step costs one copy of the new token, not of the history. On the CPU a
// decode step reads the stored rows directly (kernels::full_decode_attention: 16-bit rows widened
// in registers, fp32 accumulation), so its cost is linear in the context with no conversion of the
// history. Under autograd it keeps the history by concatenation instead, so gradients flow through it.
class FullPrecisionLayerCache : public LayerCache {
 public:
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  void fill(const at::Tensor& k, const at::Tensor& v) override { append(k, v); }
  int64_t length() const override { return length_; }
  CacheBytes bytes() const override;
  int64_t capacity_bytes() const override;
  void reset() override;

  at::Tensor keys() const;    // [B, Hkv, length, D] view
  at::Tensor values() const;  // [B, Hkv, length, D] view

 private:
  void append(const at::Tensor& k, const at::Tensor& v);
  at::Tensor decode_attention(const at::Tensor& q) const;
  at::Tensor k_buf_;  // [B, Hkv, capacity, D]
  at::Tensor v_buf_;  // [B, Hkv, capacity, D]
  int64_t length_ = 0;
};

}  // namespace kvlab
