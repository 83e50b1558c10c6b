#pragma once
// x @ w^T + b for the model's projections, computed in x's dtype.
//
// A bf16 / fp16 model on the CPU computes in fp32 (LibTorch has no fast 16-bit matmul there) while
// its weights stay 16-bit in memory. Its matmuls read the 16-bit weights in place instead of
// widening whole matrices per call:
//   - up to kDirectRows rows of x (a decode step of a batch): kernels::linear16_rows, which reads
//     each weight once at 2 bytes (half the memory traffic of fp32 weights), widening in registers;
//   - more rows (prefill): tiles of weight rows widened into a per-thread fp32 buffer (1 MiB) and
//     multiplied by BLAS, so no fp32 copy of a whole matrix ever exists.
// Elsewhere (another device, autograd through the weights or x) the weights are widened per call.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kvlab {

// Rows of x up to which the 16-bit weights go through the direct kernel.
constexpr int64_t kDirectRows = 8;

// x: [..., K]; w: [N, K] (HF Linear layout); b: [N] or undefined. Returns [..., N] in x's dtype.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

}  // namespace kvlab
