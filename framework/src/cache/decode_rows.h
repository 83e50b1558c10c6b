#pragma once
// What the caches hand the CPU decode-attention kernels: the K/V rows of one (batch, kv-head) of a
// [B, H, n, D] tensor in its own dtype (no fp32 copy), and a per-thread scratch for the scores.
#include <ATen/ATen.h>

#include <vector>

#include "kvlab/common/error.h"
#include "kvlab/kernels/packed_attention.h"

namespace kvlab::cache_detail {

// Whether the kernels read this dtype directly.
inline bool kernel_row_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

// x: [B, H, n, D] on the CPU whose rows have stride D (a contiguous tensor, or a narrow of one
// along the token axis); b, h select the rows.
inline kernels::Rows rows_of(const at::Tensor& x, int64_t b, int64_t h) {
  const int64_t n = x.size(2);
  if (n == 0) return kernels::Rows(nullptr, kernels::RowType::F32, 0);
  if (x.stride(3) != 1 || x.stride(2) != x.size(3)) fail("kv cache: K/V rows are not contiguous");
  const int64_t offset = b * x.stride(0) + h * x.stride(1);
  switch (x.scalar_type()) {
    case at::kFloat: return kernels::Rows(x.data_ptr<float>() + offset, kernels::RowType::F32, n);
    case at::kHalf: return kernels::Rows(x.data_ptr<at::Half>() + offset, kernels::RowType::F16, n);
    case at::kBFloat16: return kernels::Rows(x.data_ptr<at::BFloat16>() + offset, kernels::RowType::BF16, n);
    default: fail("kv cache: the decode kernels do not read {} K/V", c10::toString(x.scalar_type()));
  }
}

// A per-thread buffer of at least n floats (grown, never shrunk: no allocation per decode step).
inline float* thread_scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(n)) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

}  // namespace kvlab::cache_detail
