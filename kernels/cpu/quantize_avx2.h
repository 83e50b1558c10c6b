// AVX2 loops of group quantization, included by kernel_loops.h inside its namespace when the unit
// is compiled with AVX2 + FMA + F16C. Same arithmetic as the portable loops (division, clamp,
// round-half-even), so the codes are bit-identical: vcvtps2dq rounds to nearest even in the default
// MXCSR mode, and the clamped values are small, so no separate rounding step is needed.

namespace avx2_quant {

// round(clamp((x - zero) / step, lo, hi)) as int32 lanes.
inline __m256i encode_vec(__m256 x, __m256 zero, __m256 step, __m256 lo, __m256 hi) {
  __m256 v = _mm256_div_ps(_mm256_sub_ps(x, zero), step);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
}

inline uint32_t or_lanes(__m256i v) {
  __m128i x = _mm_or_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0x4e));
  x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0xb1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(x));
}

// One token, groups of G consecutive channels; handles B in {1, 2, 4} with G a multiple of 8 (a word
// then holds whole vectors of codes). Returns false for other shapes.
template <int B, typename P>
bool quantize_token(const float* x, int64_t D, const QuantShape& q, uint32_t* words, P* scales, P* zeros,
                    int64_t token) {
  constexpr int cpw = cpw_of<B>();
  if constexpr (B == 3 || B == 8) {
    return false;
  } else {
    const int64_t G = q.group, ng = D / G;
    if (G % 8 != 0 || D % cpw != 0 || D > 1024) return false;
    // Three passes so the scalar work of one group (reduce, scale, rounding to P) overlaps the
    // others' instead of sitting between vector loops: ranges, then codings, then codes.
    alignas(32) int32_t cbuf[1024];
    float lo[128], hi[128];
    __m256 nan = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; ++g) {
      const float* xg = x + g * G;
      __m256 mn = _mm256_loadu_ps(xg), mx = mn;
      for (int64_t i = 0; i < G; i += 8) {
        const __m256 v = _mm256_loadu_ps(xg + i);
        mn = _mm256_min_ps(mn, v), mx = _mm256_max_ps(mx, v);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      }
      __m128 m4 = _mm_min_ps(_mm256_castps256_ps128(mn), _mm256_extractf128_ps(mn, 1));
      m4 = _mm_min_ps(m4, _mm_movehl_ps(m4, m4));
      lo[g] = _mm_cvtss_f32(_mm_min_ss(m4, _mm_movehdup_ps(m4)));
      __m128 x4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
      x4 = _mm_max_ps(x4, _mm_movehl_ps(x4, x4));
      hi[g] = _mm_cvtss_f32(_mm_max_ss(x4, _mm_movehdup_ps(x4)));
    }
    // NaN shows in the mask; +-Inf shows as an infinite min or max.
    bool bad = _mm256_movemask_ps(nan) != 0;
    for (int64_t g = 0; g < ng; ++g) bad |= !std::isfinite(lo[g]) || !std::isfinite(hi[g]);
    if (bad) report_non_finite(x, 1, 0, 0, D, token);
    GroupCoding gc[128];
    for (int64_t g = 0; g < ng; ++g)
      gc[g] = group_coding<B, P>(lo[g], hi[g], q.symmetric, scales + g, q.symmetric ? nullptr : zeros + g, token,
                                 g * G);
    for (int64_t g = 0; g < ng; ++g) {
      const float* xg = x + g * G;
      const __m256 vz = _mm256_set1_ps(gc[g].zero), vs = _mm256_set1_ps(gc[g].step);
      const __m256 vlo = _mm256_set1_ps(gc[g].lo), vhi = _mm256_set1_ps(gc[g].hi);
      const __m256i voff = _mm256_set1_epi32(gc[g].offset);
      const bool constant = gc[g].keep == 0.f;  // every code is the offset
      for (int64_t i = 0; i < G; i += 8) {
        const __m256i code = constant ? voff : _mm256_add_epi32(encode_vec(_mm256_loadu_ps(xg + i), vz, vs, vlo, vhi), voff);
        _mm256_store_si256(reinterpret_cast<__m256i*>(cbuf + g * G + i), code);
      }
    }
    // Pack: lane j of the k-th vector of a word shifts by (8k + j) * B; OR the lanes together.
    constexpr int NV = cpw / 8;
    alignas(32) int32_t sh[NV][8];
    for (int k = 0; k < NV; ++k)
      for (int j = 0; j < 8; ++j) sh[k][j] = (8 * k + j) * B;
    __m256i shift[NV];
    for (int k = 0; k < NV; ++k) shift[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sh[k]));
    for (int64_t w = 0; w < D / cpw; ++w) {
      __m256i acc = _mm256_setzero_si256();
      for (int k = 0; k < NV; ++k) {
        const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(cbuf + w * cpw + 8 * k));
        acc = _mm256_or_si256(acc, _mm256_sllv_epi32(c, shift[k]));
      }
      words[w] = or_lanes(acc);
    }
    return true;
  }
}

// word[d] |= code(r[d]) << shift for one token row of a per-channel block.
inline void encode_row_into_words(const float* r, const float* zr, const float* st, const float* keep,
                                  const GroupCoding& gc, int shift, uint32_t* word, int64_t D) {
  const __m256 vlo = _mm256_set1_ps(gc.lo), vhi = _mm256_set1_ps(gc.hi);
  const __m256i voff = _mm256_set1_epi32(gc.offset);
  const __m128i vsh = _mm_cvtsi32_si128(shift);
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    __m256 v = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(r + d), _mm256_loadu_ps(zr + d)), _mm256_loadu_ps(st + d));
    v = _mm256_mul_ps(_mm256_min_ps(_mm256_max_ps(v, vlo), vhi), _mm256_loadu_ps(keep + d));
    const __m256i code = _mm256_sll_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(v), voff), vsh);
    __m256i* wp = reinterpret_cast<__m256i*>(word + d);
    _mm256_storeu_si256(wp, _mm256_or_si256(_mm256_loadu_si256(wp), code));
  }
  for (; d < D; ++d) {
    float v = (r[d] - zr[d]) / st[d];
    v = std::min(std::max(v, gc.lo), gc.hi);
    word[d] |= static_cast<uint32_t>(static_cast<int32_t>(round_even(v) * keep[d]) + gc.offset) << shift;
  }
}

}  // namespace avx2_quant
