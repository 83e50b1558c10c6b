#include "kvlab/cache/kv_cache.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "decode_rows.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/model/attention.h"

namespace kvlab {

ByteBreakdown& ByteBreakdown::operator+=(const ByteBreakdown& o) {
  packed_codes += o.packed_codes;
  scales_zeros += o.scales_zeros;
  full_precision += o.full_precision;
  metadata += o.metadata;
  return *this;
}

CacheBytes& CacheBytes::operator+=(const CacheBytes& o) {
  keys += o.keys;
  values += o.values;
  return *this;
}

void LayerCache::fill(const at::Tensor&, const at::Tensor&) {
  fail("kv cache: this cache cannot be filled without attention (no synthetic fill)");
}

KvCache::KvCache(int64_t num_layers, const LayerCacheFactory& make_layer) {
  layers_.reserve(static_cast<size_t>(num_layers));
  for (int64_t i = 0; i < num_layers; ++i) layers_.push_back(make_layer(i));
}

KvCache KvCache::full_precision(int64_t num_layers) {
  return KvCache(num_layers, [](int64_t) { return std::make_unique<FullPrecisionLayerCache>(); });
}

int64_t KvCache::length() const { return layers_.empty() ? 0 : layers_.front()->length(); }

CacheBytes KvCache::bytes() const {
  CacheBytes total;
  for (const auto& l : layers_) total += l->bytes();
  return total;
}

void KvCache::reset() {
  for (auto& l : layers_) l->reset();
}

// ---- FullPrecisionLayerCache ------------------------------------------------------------------

void FullPrecisionLayerCache::append(const at::Tensor& k, const at::Tensor& v) {
  const int64_t T = k.size(2);
  if (length_ > 0 && (k.size(0) != k_buf_.size(0) || k.size(1) != k_buf_.size(1) ||
                      k.size(3) != k_buf_.size(3) || k.scalar_type() != k_buf_.scalar_type()))
    fail("kv cache: appended keys of shape {} do not match the cached batch/heads/dim/dtype", c10::str(k.sizes()));
  if (k.requires_grad() || v.requires_grad()) {
    // Autograd: no in-place writes into a shared buffer; concatenation keeps the graph intact.
    k_buf_ = length_ == 0 ? k : at::cat({keys(), k}, 2);
    v_buf_ = length_ == 0 ? v : at::cat({values(), v}, 2);
    length_ += T;
    return;
  }
  const int64_t capacity = k_buf_.defined() ? k_buf_.size(2) : 0;
  if (length_ + T > capacity) {
    const int64_t new_cap = std::max<int64_t>({length_ + T, 2 * capacity, 16});
    auto grow = [&](const at::Tensor& old, const at::Tensor& like) {
      at::Tensor buf = at::empty({like.size(0), like.size(1), new_cap, like.size(3)}, like.options());
      if (length_ > 0) buf.narrow(2, 0, length_).copy_(old.narrow(2, 0, length_));
      return buf;
    };
    k_buf_ = grow(k_buf_, k);
    v_buf_ = grow(v_buf_, v);
  }
  k_buf_.narrow(2, length_, T).copy_(k);
  v_buf_.narrow(2, length_, T).copy_(v);
  length_ += T;
}

at::Tensor FullPrecisionLayerCache::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  append(k, v);
  const bool kernel = q.size(2) == 1 && q.device().is_cpu() && !q.requires_grad() && !k_buf_.requires_grad() &&
                      !v_buf_.requires_grad() && cache_detail::kernel_row_dtype(k_buf_.scalar_type()) &&
                      k_buf_.is_contiguous() && v_buf_.is_contiguous();
  if (kernel) return decode_attention(q);
  return causal_gqa_attention(q, keys(), values());
}

// One new query per head against every held token, (batch, kv-head) pairs in parallel; the
// query heads of a kv-head (GQA) share one pass over its rows.
at::Tensor FullPrecisionLayerCache::decode_attention(const at::Tensor& q) const {
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3), Hkv = k_buf_.size(1);
  if (Hq % Hkv != 0) fail("attention: {} query heads are not a multiple of {} kv heads", Hq, Hkv);
  const int64_t G = Hq / Hkv, S = length_;
  const at::Tensor qf = q.to(at::kFloat).contiguous();      // [B, Hkv, G, D] in memory
  at::Tensor out = at::empty({B, Hkv, G, D}, qf.options());  // [B, Hkv, G, D]
  const at::Tensor k = keys(), v = values();                // [B, Hkv, S, D] views of the buffers
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float* qp = qf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    float* workspace = cache_detail::thread_scratch(G * S);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / Hkv, h = bh % Hkv;
      kernels::full_decode_attention(qp + bh * G * D, G, D, cache_detail::rows_of(k, b, h),
                                     cache_detail::rows_of(v, b, h), scale, op + bh * G * D, workspace);
    }
  });
  return out.view({B, Hq, 1, D}).to(q.scalar_type());
}

at::Tensor FullPrecisionLayerCache::keys() const { return k_buf_.narrow(2, 0, length_); }
at::Tensor FullPrecisionLayerCache::values() const { return v_buf_.narrow(2, 0, length_); }

CacheBytes FullPrecisionLayerCache::bytes() const {
  CacheBytes b;
  if (length_ == 0) return b;
  const int64_t per_token = k_buf_.size(0) * k_buf_.size(1) * k_buf_.size(3) *
                            static_cast<int64_t>(k_buf_.element_size());
  b.keys.full_precision = per_token * length_;
  b.values.full_precision = per_token * length_;
  return b;
}

int64_t FullPrecisionLayerCache::capacity_bytes() const {
  if (!k_buf_.defined()) return 0;
  return static_cast<int64_t>(k_buf_.nbytes() + v_buf_.nbytes());
}

void FullPrecisionLayerCache::reset() {
  k_buf_ = at::Tensor();
  v_buf_ = at::Tensor();
  length_ = 0;
}

}  // namespace kvlab
