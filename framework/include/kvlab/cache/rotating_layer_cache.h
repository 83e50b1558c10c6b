#pragma once
// Rotated KV quantization (cache_plan.h: RotationSpec). A decorator around any layer cache:
//
//   attend(q, k, v) = R^T-if-values( inner.attend(R q, R k, R v) )   (q, k rotated when keys are)
//
// so the inner cache (the streaming quantized cache, its packed decode kernels, the token-by-token
// path, MixKVQ's exact channels) runs unchanged on rotated rows. In exact arithmetic this changes
// nothing but what is quantized: q.k = (Rq).(Rk) since R is orthogonal, and sum_t p_t v_t =
// R^T sum_t p_t (R v_t). make_cache (quantized_layer_cache.h) adds it where a layer plan asks.
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/quant/cache_plan.h"

namespace kvlab {

// R = H diag(s) / sqrt(d) for one head_dim d (a power of two; else an Error naming head_dim).
class HeadRotation {
 public:
  HeadRotation(int64_t head_dim, uint64_t sign_seed);

  // x [..., d] -> each row r becomes R r (rotate) or R^T r (unrotate); same dtype and device.
  // CPU rows without autograd go through the fast Walsh-Hadamard kernel in fp32; other devices,
  // or tensors that need gradients, multiply by the d x d matrix.
  at::Tensor rotate(const at::Tensor& x) const;
  at::Tensor unrotate(const at::Tensor& x) const;

  at::Tensor matrix() const;  // R [d, d], fp32
  int64_t dim() const { return d_; }
  // The sign vector s: all +1 for seed 0, else fixed +-1 from std::mt19937_64(seed) (one draw per channel).
  const std::vector<float>& signs() const { return signs_; }

 private:
  at::Tensor apply(const at::Tensor& x, bool inverse) const;
  int64_t d_;
  std::vector<float> signs_;  // [d]
  bool has_signs_;
  mutable at::Tensor device_matrix_;  // R [d, d] on the last non-CPU / autograd device used
};

class RotatingLayerCache : public LayerCache {
 public:
  RotatingLayerCache(std::unique_ptr<LayerCache> inner, const RotationSpec& rotation);

  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  void fill(const at::Tensor& k, const at::Tensor& v) override;  // stores H k / H v as attend would
  int64_t length() const override { return inner_->length(); }
  CacheBytes bytes() const override { return inner_->bytes(); }
  int64_t capacity_bytes() const override { return inner_->capacity_bytes(); }
  void reset() override { inner_->reset(); }

  LayerCache& inner() { return *inner_; }
  const LayerCache& inner() const { return *inner_; }
  const RotationSpec& rotation() const { return rotation_; }

 private:
  std::unique_ptr<LayerCache> inner_;
  RotationSpec rotation_;
  std::unique_ptr<HeadRotation> r_;  // made at the first attend, from head_dim
};

}  // namespace kvlab
