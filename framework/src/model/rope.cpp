#include "kvlab/model/rope.h"

#include <ATen/ATen.h>

#include <cmath>

namespace kvlab {

Rope::Rope(const ModelConfig& c) {
  const int64_t D = c.head_dim;
  // 1 / theta^(2i / D), in fp32 like transformers' default rope init.
  at::Tensor exponents = at::arange(0, D, 2, at::kLong).to(at::kFloat) / static_cast<double>(D);
  at::Tensor inv = 1.0 / at::pow(static_cast<double>(c.rope_theta), exponents);
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScaling::Type::Linear) {
    inv = inv / rs.factor;
  } else if (rs.type == RopeScaling::Type::Llama3) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between
    // interpolated smoothly.
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / rs.factor, inv);
    at::Tensor smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    at::Tensor medium = at::logical_and(at::logical_not(wavelen < high_wavelen),
                                        at::logical_not(wavelen > low_wavelen));
    inv = at::where(medium, smoothed, scaled);
  }
  inv_freq_ = inv.to(at::kFloat).contiguous();
}

std::pair<at::Tensor, at::Tensor> Rope::cos_sin(const at::Tensor& positions) const {
  at::Tensor inv = inv_freq_.to(positions.device());
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv;  // [B, T, D/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);      // [B, 1, T, D]
  return {emb.cos(), emb.sin()};
}

at::Tensor Rope::apply(const at::Tensor& x, const at::Tensor& positions) const {
  auto [cos, sin] = cos_sin(positions);
  cos = cos.to(x.scalar_type());
  sin = sin.to(x.scalar_type());
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

}  // namespace kvlab
