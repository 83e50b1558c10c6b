#include "kvlab/cache/rotating_layer_cache.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <random>

#include "kvlab/common/error.h"
#include "kvlab/kernels/hadamard.h"

namespace kvlab {

HeadRotation::HeadRotation(int64_t head_dim, uint64_t sign_seed)
    : d_(head_dim), signs_(static_cast<size_t>(std::max<int64_t>(head_dim, 0)), 1.0f), has_signs_(sign_seed != 0) {
  if (!kernels::is_power_of_two(head_dim))
    fail("rotate: the Walsh-Hadamard rotation needs a power-of-two head_dim; got head_dim {}", head_dim);
  if (has_signs_) {
    std::mt19937_64 rng(sign_seed);
    for (auto& s : signs_) s = (rng() >> 63) ? -1.0f : 1.0f;
  }
}

at::Tensor HeadRotation::matrix() const {
  // Row i of the identity becomes R e_i, column i of R.
  at::Tensor cols = at::eye(d_, at::kFloat).contiguous();
  kernels::hadamard_rows(cols.data_ptr<float>(), d_, d_, has_signs_ ? signs_.data() : nullptr, nullptr);
  return cols.t().contiguous();
}

at::Tensor HeadRotation::rotate(const at::Tensor& x) const { return apply(x, false); }
at::Tensor HeadRotation::unrotate(const at::Tensor& x) const { return apply(x, true); }

at::Tensor HeadRotation::apply(const at::Tensor& x, bool inverse) const {
  if (x.size(-1) != d_) fail("rotate: rows of {} values for a rotation over head_dim {}", x.size(-1), d_);
  if (x.numel() == 0) return x;
  if (x.is_cpu() && !(c10::GradMode::is_enabled() && x.requires_grad())) {
    at::Tensor y = at::empty(x.sizes(), x.options().dtype(at::kFloat));  // [..., d] contiguous fp32
    y.copy_(x);
    float* p = y.data_ptr<float>();
    const int64_t rows = y.numel() / d_;
    // R r = H (s . r) / sqrt(d); R^T r = s . (H r) / sqrt(d).
    const float* pre = has_signs_ && !inverse ? signs_.data() : nullptr;
    const float* post = has_signs_ && inverse ? signs_.data() : nullptr;
    at::parallel_for(0, rows, std::max<int64_t>(1, (int64_t{1} << 15) / d_), [&](int64_t begin, int64_t end) {
      kernels::hadamard_rows(p + begin * d_, end - begin, d_, pre, post);
    });
    return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
  }
  // Rows times the matrix: r -> R r is x R^T, r -> R^T r is x R. In fp32, back to x's dtype.
  if (!device_matrix_.defined() || device_matrix_.device() != x.device()) device_matrix_ = matrix().to(x.device());
  const at::Tensor& m = device_matrix_;
  return at::matmul(x.to(at::kFloat), inverse ? m : m.t()).to(x.scalar_type());
}

RotatingLayerCache::RotatingLayerCache(std::unique_ptr<LayerCache> inner, const RotationSpec& rotation)
    : inner_(std::move(inner)), rotation_(rotation) {
  if (!inner_) fail("rotate: no layer cache to wrap");
}

at::Tensor RotatingLayerCache::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!r_) r_ = std::make_unique<HeadRotation>(q.size(-1), rotation_.sign_seed);
  const at::Tensor qr = rotation_.keys ? r_->rotate(q) : q;
  const at::Tensor kr = rotation_.keys ? r_->rotate(k) : k;
  const at::Tensor vr = rotation_.values ? r_->rotate(v) : v;
  at::Tensor out = inner_->attend(qr, kr, vr);  // [B, Hq, T, D], rotated when values are
  return rotation_.values ? r_->unrotate(out) : out;
}

void RotatingLayerCache::fill(const at::Tensor& k, const at::Tensor& v) {
  if (!r_) r_ = std::make_unique<HeadRotation>(k.size(-1), rotation_.sign_seed);
  inner_->fill(rotation_.keys ? r_->rotate(k) : k, rotation_.values ? r_->rotate(v) : v);
}

}  // namespace kvlab
