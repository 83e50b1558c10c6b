// The fast Walsh-Hadamard butterfly (kvlab/kernels/hadamard.h), compiled three times like
// kernel_loops.h: included by kernels_generic.cpp, kernels_avx2.cpp and kernels_avx512.cpp with
// KVLAB_KERNEL_ISA naming the namespace; hadamard.cpp picks the build at run time.
//
// Every build computes the same float operations in the same order (stage h = 1, 2, 4, ...; each
// butterfly a + b, a - b; then one multiply by post_i / sqrt(n)), so the builds agree bit for bit:
// the AVX2 lanes compute a + b as fma(b, +1, a) and a - b as fma(b, -1, a), which round the same.
#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define KVLAB_HADAMARD_AVX2 1
#endif

#ifndef KVLAB_KERNEL_ISA
#error "define KVLAB_KERNEL_ISA before including hadamard_loops.h"
#endif

namespace kvlab::kernels::KVLAB_KERNEL_ISA {

// One row in place, unnormalized: x <- H_n x.
inline void hadamard_butterfly(float* x, int64_t n) {
  int64_t h = 1;
#ifdef KVLAB_HADAMARD_AVX2
  if (n >= 8) {
    // Stages 1, 2, 4 inside each 8-float block: the partner lane comes from a permute, and the
    // sign vector makes the lower lane a + b and the upper one a - b.
    const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
    const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
    const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
    for (int64_t i = 0; i < n; i += 8) {
      __m256 v = _mm256_loadu_ps(x + i);
      v = _mm256_fmadd_ps(v, s1, _mm256_permute_ps(v, 0xB1));        // partner lanes 1 0 3 2 ...
      v = _mm256_fmadd_ps(v, s2, _mm256_permute_ps(v, 0x4E));        // partner lanes 2 3 0 1 ...
      v = _mm256_fmadd_ps(v, s4, _mm256_permute2f128_ps(v, v, 1));   // partner half
      _mm256_storeu_ps(x + i, v);
    }
    for (h = 8; h < n; h *= 2)
      for (int64_t i = 0; i < n; i += 2 * h)
        for (int64_t j = i; j < i + h; j += 8) {
          const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
          _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
          _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
        }
    return;
  }
#endif
  for (; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

void hadamard_rows_entry(float* x, int64_t rows, int64_t n, const float* pre, const float* post) {
  const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * n;
    if (pre)
      for (int64_t j = 0; j < n; ++j) row[j] *= pre[j];
    hadamard_butterfly(row, n);
    if (post)
      for (int64_t j = 0; j < n; ++j) row[j] *= norm * post[j];
    else
      for (int64_t j = 0; j < n; ++j) row[j] *= norm;
  }
}

}  // namespace kvlab::kernels::KVLAB_KERNEL_ISA

#undef KVLAB_HADAMARD_AVX2
