#pragma once
// Matmuls against 16-bit weights with fp32 activations, for a bf16 / fp16 model that computes in
// fp32 on the CPU (LibTorch has no fast 16-bit matmul there) while its weights stay 16-bit in memory.
//
//   y[m, n] = sum_k x[m, k] * W[n, k]     x [M, K] fp32, W [N, K] fp16 or bf16 (HF Linear layout)
//
// linear16_rows reads each weight once, at 2 bytes, widening it in registers: for the few rows
// of a decode step (M up to a batch) it is bound by the weights' memory traffic, half that of fp32
// weights. widen_rows turns 16-bit values into fp32 (for tiles handed to a BLAS matmul when M is
// large enough to be compute-bound).
#include <cstdint>

#include "kvlab/kernels/packed_attention.h"

namespace kvlab::kernels {

// Output columns n in [n0, n1): y[m * ldy + n] for every m < M. w points at row 0 of W.
void linear16_rows(const float* x, int64_t M, int64_t K, const void* w, RowType type, int64_t n0, int64_t n1,
                   float* y, int64_t ldy);

// dst[i] = float(src[i]) for i < n.
void widen_rows(const void* src, RowType type, int64_t n, float* dst);

namespace reference {
// The definition, accumulated in double.
void linear16_rows(const float* x, int64_t M, int64_t K, const void* w, RowType type, int64_t n0, int64_t n1,
                   float* y, int64_t ldy);
}  // namespace reference

}  // namespace kvlab::kernels
