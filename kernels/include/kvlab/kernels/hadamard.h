#pragma once
// The normalized Walsh-Hadamard transform of rows of n floats (n a power of two), the rotation a
// rotated KV cache applies over head_dim before quantizing (QuaRot / llama.cpp style):
//
//   y = post ⊙ (H_n (pre ⊙ x)) / sqrt(n),    H_n[i][j] = (-1)^popcount(i & j)   (Sylvester order)
//
// pre / post are optional per-element factors (nullptr: all ones), e.g. a fixed +-1 sign vector s.
// H_n is symmetric and H_n H_n = n I, so R = H_n diag(s) / sqrt(n) is orthogonal and the transform
// with pre = s (x -> R x) is undone by the one with post = s (y -> R^T y).
//
// The fast version is the in-place butterfly, O(n log n) per row: stages h = 1, 2, 4, ... combine
// x[j], x[j + h] into (x[j] + x[j + h], x[j] - x[j + h]); AVX2 does the first three stages inside one
// 8-float register (lane permutes) and the rest 8 lanes at a time. The reference evaluates the
// definition, O(n^2), in double.
#include <cstdint>

namespace kvlab::kernels {

constexpr bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// x [rows, n] (row stride n), in place. n must be a power of two (else kvlab::Error).
void hadamard_rows(float* x, int64_t rows, int64_t n, const float* pre = nullptr, const float* post = nullptr);

namespace reference {
void hadamard_rows(float* x, int64_t rows, int64_t n, const float* pre = nullptr, const float* post = nullptr);
}  // namespace reference

}  // namespace kvlab::kernels
