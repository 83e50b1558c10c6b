// The loops of kvlab/kernels/linear16.h, compiled once per kernel build (included at the end of
// kernel_loops.h, inside nothing: it opens the build's namespace itself).
#include "kvlab/kernels/linear16.h"

namespace kvlab::kernels::KVLAB_KERNEL_ISA {

#ifdef KVLAB_AVX2_LOOPS
// 8 weights as floats.
template <typename R>
inline __m256 load_widened(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (std::is_same_v<R, c10::Half>) return _mm256_cvtph_ps(h);
  else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// y[m][n0 + r] for NR weight rows and MR activation rows at once: NR * MR accumulators, each weight
// vector widened once and used by MR rows, each activation vector used by NR rows. K % 8 == 0.
template <typename R, int NR, int MR>
inline void linear_tile(const float* x, int64_t K, const uint16_t* w, int64_t m0, int64_t n, float* y, int64_t ldy) {
  __m256 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps();
  const float* xm = x + m0 * K;
  const uint16_t* wn = w + n * K;
  for (int64_t k = 0; k < K; k += 8) {
    __m256 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = load_widened<R>(wn + r * K + k);
    for (int m = 0; m < MR; ++m) {
      const __m256 xv = _mm256_loadu_ps(xm + m * K + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) y[(m0 + m) * ldy + n + r] = avx2_loops::hsum(acc[m][r]);
}

template <typename R>
void linear16_avx2(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t n0, int64_t n1, float* y,
                   int64_t ldy) {
  constexpr int NR = 4;  // 4 weight rows x 2 activation rows: 8 accumulators, 4 + 1 operands live
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) {
    int64_t m = 0;
    for (; m + 2 <= M; m += 2) linear_tile<R, NR, 2>(x, K, w, m, n, y, ldy);
    if (m < M) linear_tile<R, NR, 1>(x, K, w, m, n, y, ldy);
  }
  for (; n < n1; ++n) {
    int64_t m = 0;
    for (; m + 2 <= M; m += 2) linear_tile<R, 1, 2>(x, K, w, m, n, y, ldy);
    if (m < M) linear_tile<R, 1, 1>(x, K, w, m, n, y, ldy);
  }
}
#endif

template <typename R>
void linear16_portable(const float* x, int64_t M, int64_t K, const R* w, int64_t n0, int64_t n1, float* y,
                       int64_t ldy) {
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(K));
  for (int64_t n = n0; n < n1; ++n) {
    widen(w + n * K, K, row.data());  // one weight row as floats, then plain dots
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K;
      float part[kLanes] = {};
      int64_t k = 0;
      for (; k + kLanes <= K; k += kLanes)
        for (int j = 0; j < kLanes; ++j) part[j] += xm[k + j] * row[k + j];
      float dot = 0.f;
      for (; k < K; ++k) dot += xm[k] * row[k];
      for (int j = 0; j < kLanes; ++j) dot += part[j];
      y[m * ldy + n] = dot;
    }
  }
}

void linear16_entry(const float* x, int64_t M, int64_t K, const void* w, RowType type, int64_t n0, int64_t n1, float* y,
                    int64_t ldy) {
  const bool f16 = type == RowType::F16;
#ifdef KVLAB_AVX2_LOOPS
  if (K % 8 == 0) {
    const auto* w16 = static_cast<const uint16_t*>(w);
    if (f16) linear16_avx2<c10::Half>(x, M, K, w16, n0, n1, y, ldy);
    else linear16_avx2<c10::BFloat16>(x, M, K, w16, n0, n1, y, ldy);
    return;
  }
#endif
  if (f16) linear16_portable(x, M, K, static_cast<const c10::Half*>(w), n0, n1, y, ldy);
  else linear16_portable(x, M, K, static_cast<const c10::BFloat16*>(w), n0, n1, y, ldy);
}

void widen_entry(const void* src, RowType type, int64_t n, float* dst) {
  if (type == RowType::F16) widen(static_cast<const c10::Half*>(src), n, dst);
  else widen(static_cast<const c10::BFloat16*>(src), n, dst);
}

}  // namespace kvlab::kernels::KVLAB_KERNEL_ISA
