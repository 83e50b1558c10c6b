#pragma once
// Rotary position embedding in HF's layout: each head's dimensions are split into two halves
// (x1 = x[:D/2], x2 = x[D/2:]) and rotated as (x1 cos - x2 sin, x2 cos + x1 sin), with the same
// frequency for dimension i and i + D/2. Frequencies follow config.json (theta, linear or llama3
// scaling), computed in fp32 exactly as transformers does.
#include <ATen/core/Tensor.h>

#include "kvlab/model/model_config.h"

namespace kvlab {

class Rope {
 public:
  explicit Rope(const ModelConfig& config);

  const at::Tensor& inv_freq() const { return inv_freq_; }  // [D/2] fp32, scaling applied

  // x: [B, H, T, D]; positions: [B, T] int64. Returns the rotated tensor in x's dtype.
  at::Tensor apply(const at::Tensor& x, const at::Tensor& positions) const;
  // cos and sin for positions, each [B, 1, T, D] in fp32 (the halves repeated).
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& positions) const;

 private:
  at::Tensor inv_freq_;
};

}  // namespace kvlab
