#pragma once
// Tensor-level group quantization under a TensorQuantSpec: encode a [..., T, D] tensor into packed
// codes + scales (+ zeros), decode back. The streaming cache packs its streams through the same
// kernels; this is the form for offline work (calibration, error studies, tests, tools).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "kvlab/quant/cache_plan.h"

namespace kvlab {

struct PackedTensor {
  TensorQuantSpec spec;              // group resolved (never -1)
  std::vector<int64_t> shape;        // the original [..., T, D]
  // Per leading index n (the product of the leading dims), layouts of kernels/group_quant.h:
  //   per-token:   codes [N, T, Wt] int32, scales/zeros [N, T, D/G]
  //   per-channel: codes [N, T/G, D, Wc] int32, scales/zeros [N, T/G, D]
  at::Tensor codes, scales, zeros;   // zeros undefined when symmetric

  int64_t code_bytes() const;
  int64_t param_bytes() const;       // scales + zeros
  int64_t bytes() const { return code_bytes() + param_bytes(); }
  double bits_per_element() const;   // 8 * bytes / elements
};

class Quantizer {
 public:
  // spec.bits must be 1, 2, 3, 4 or 8; the group is checked against each tensor's shape.
  explicit Quantizer(TensorQuantSpec spec);

  // x: at least 2 dims [..., T, D], any float dtype, CPU. NaN/Inf is an error.
  PackedTensor encode(const at::Tensor& x) const;
  // Back to fp32, shape of the encoded tensor.
  static at::Tensor decode(const PackedTensor& p);

  const TensorQuantSpec& spec() const { return spec_; }

 private:
  TensorQuantSpec spec_;
};

}  // namespace kvlab
