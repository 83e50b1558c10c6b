// AVX-512 loops of group quantization, included by kernel_loops.h inside its namespace when the
// unit is compiled with AVX-512 F/VL/BW/DQ. Same arithmetic as group_coding and encode (division,
// clamp, round-half-even, parameters rounded to P), so the codes are bit-identical; what changes
// is that a group's coding (scale, zero, rounding to fp16) is worked out for 16 groups at once
// instead of one at a time, and 16 codes are packed with two multiply-adds instead of shifts and
// a horizontal OR.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's intrinsics, as in kernel_loops_avx512.h
#pragma GCC diagnostic ignored "-Wuninitialized"
namespace avx512_quant {

template <typename P>
inline __m512 param_round16(__m512 v) {
  if constexpr (std::is_same_v<P, float>) return v;
  else return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <typename P>
inline void store_params(P* dst, __m512 v, __mmask16 m) {
  if constexpr (std::is_same_v<P, float>)
    _mm512_mask_storeu_ps(dst, m, v);
  else
    _mm256_mask_storeu_epi16(dst, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// The codings of n groups from their ranges lo/hi (finite): stores the scales (and zeros) and
// writes zero/step/keep per group, as group_coding does one at a time. The bounds and offset are
// the same for every group: see uniform_coding. A parameter that overflows P is reported by
// calling scalar(i) for the groups of its vector in order (group_coding then fails with the
// group's token and channel).
template <int B, typename P, typename Scalar>
void group_codings(const float* lo, const float* hi, int64_t n, bool symmetric, P* scales, P* zeros, float* zero,
                   float* step, float* keep, Scalar&& scalar) {
  const __m512 one = _mm512_set1_ps(1.f), zero_v = _mm512_setzero_ps();
  const __m512 L = _mm512_set1_ps(static_cast<float>(symmetric ? (1 << (B - 1)) - 1 : (1 << B) - 1));
  const __m512 inf = _mm512_set1_ps(INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1u);
    const __m512 l = _mm512_maskz_loadu_ps(m, lo + i), h = _mm512_maskz_loadu_ps(m, hi + i);
    __m512 S, Z = zero_v;
    __mmask16 ok;
    if (symmetric) {
      S = param_round16<P>(_mm512_div_ps(_mm512_max_ps(_mm512_abs_ps(l), _mm512_abs_ps(h)), L));
      ok = _mm512_cmp_ps_mask(_mm512_abs_ps(S), inf, _CMP_LT_OQ);
    } else {
      S = param_round16<P>(_mm512_div_ps(_mm512_sub_ps(h, l), L));
      Z = param_round16<P>(l);
      ok = _mm512_cmp_ps_mask(_mm512_abs_ps(S), inf, _CMP_LT_OQ) & _mm512_cmp_ps_mask(_mm512_abs_ps(Z), inf, _CMP_LT_OQ);
    }
    if ((ok & m) != m)
      for (int64_t j = i; j < std::min<int64_t>(n, i + 16); ++j) scalar(j);
    store_params<P>(scales + i, S, m);
    if (!symmetric) store_params<P>(zeros + i, Z, m);
    const __mmask16 flat = _mm512_cmp_ps_mask(S, zero_v, _CMP_EQ_OQ);  // S = 0: step 1, keep 0
    _mm512_mask_storeu_ps(zero + i, m, Z);
    _mm512_mask_storeu_ps(step + i, m, _mm512_mask_blend_ps(flat, S, one));
    _mm512_mask_storeu_ps(keep + i, m, _mm512_mask_blend_ps(flat, one, zero_v));
  }
}

// The part of a coding every group shares (bounds, offset).
template <int B>
inline GroupCoding uniform_coding(bool symmetric) {
  if (symmetric) {
    const int L = (1 << (B - 1)) - 1;
    return {0.f, 1.f, 1.f, -static_cast<float>(L), static_cast<float>(L), L};
  }
  return {0.f, 1.f, 1.f, 0.f, static_cast<float>((1 << B) - 1), 0};
}

// 16 codes (int32 lanes, each < 2^B) packed as B = 2: one word; B = 4: two words.
template <int B>
inline void pack16(__m512i codes, uint32_t* words) {
  const __m128i bytes = _mm512_cvtepi32_epi8(codes);
  if constexpr (B == 4) {
    const __m128i pairs = _mm_maddubs_epi16(bytes, _mm_set1_epi16(0x1001));  // c0 + 16 c1
    _mm_storel_epi64(reinterpret_cast<__m128i*>(words), _mm_cvtepi16_epi8(pairs));
  } else {
    const __m128i pairs = _mm_maddubs_epi16(bytes, _mm_set1_epi16(0x0401));  // c0 + 4 c1
    const __m128i quads = _mm_madd_epi16(pairs, _mm_set1_epi32(0x00100001));  // + 16 c2 + 64 c3
    words[0] = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_cvtepi32_epi8(quads)));
  }
}

// Per-token quantization of T rows for B in {2, 4} with G and D multiples of 16; false for other
// shapes. Tokens go 16 at a time: ranges of all their groups, then the codings together, then
// the codes.
template <int B, typename P>
bool quantize_per_token(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                        P* scales, P* zeros) {
  if constexpr (B != 2 && B != 4) {
    return false;
  } else {
    const int64_t G = q.group;
    if (G % 16 != 0 || D % 16 != 0) return false;
    constexpr int cpw = 32 / B;
    constexpr int64_t kBatch = 16;
    const int64_t ng = D / G, Wt = D / cpw;
    thread_local std::vector<float> buf;
    buf.resize(5 * kBatch * ng);
    float* lo = buf.data();
    float* hi = lo + kBatch * ng;
    float* zr = hi + kBatch * ng;
    float* st = zr + kBatch * ng;
    float* kp = st + kBatch * ng;
    const GroupCoding u = uniform_coding<B>(q.symmetric);
    const __m512 vlo = _mm512_set1_ps(u.lo), vhi = _mm512_set1_ps(u.hi);
    const __m512i voff = _mm512_set1_epi32(u.offset);
    for (int64_t t0 = 0; t0 < T; t0 += kBatch) {
      const int64_t nb = std::min(kBatch, T - t0);
      __mmask16 nan = 0;
      for (int64_t t = 0; t < nb; ++t)
        for (int64_t g = 0; g < ng; ++g) {
          const float* xg = x + (t0 + t) * ld + g * G;
          __m512 mn = _mm512_loadu_ps(xg), mx = mn;
          for (int64_t i = 0; i < G; i += 16) {
            const __m512 v = _mm512_loadu_ps(xg + i);
            mn = _mm512_min_ps(mn, v), mx = _mm512_max_ps(mx, v);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
          }
          lo[t * ng + g] = _mm512_reduce_min_ps(mn);
          hi[t * ng + g] = _mm512_reduce_max_ps(mx);
        }
      // NaN shows in the mask; +-Inf as an infinite min or max.
      bool bad = nan != 0;
      for (int64_t i = 0; i < nb * ng; ++i) bad |= !std::isfinite(lo[i]) || !std::isfinite(hi[i]);
      if (bad) report_non_finite(x + t0 * ld, nb, ld, 0, D, t0);
      group_codings<B, P>(lo, hi, nb * ng, q.symmetric, scales + t0 * ng, q.symmetric ? nullptr : zeros + t0 * ng,
                          zr, st, kp, [&](int64_t i) {
                            P s, z;
                            group_coding<B, P>(lo[i], hi[i], q.symmetric, &s, &z, t0 + i / ng, (i % ng) * G);
                          });
      for (int64_t t = 0; t < nb; ++t) {
        const float* xt = x + (t0 + t) * ld;
        uint32_t* wt = codes + (t0 + t) * Wt;
        for (int64_t g = 0; g < ng; ++g) {
          const int64_t gi = t * ng + g;
          const __m512 vz = _mm512_set1_ps(zr[gi]), vs = _mm512_set1_ps(st[gi]);
          const bool constant = kp[gi] == 0.f;  // every code is the offset
          for (int64_t i = 0; i < G; i += 16) {
            __m512i c = voff;
            if (!constant) {
              const __m512 v = _mm512_div_ps(_mm512_sub_ps(_mm512_loadu_ps(xt + g * G + i), vz), vs);
              c = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, vlo), vhi)), voff);
            }
            pack16<B>(c, wt + (g * G + i) / cpw);
          }
        }
      }
    }
    return true;
  }
}


// One word for each of 16 channels (d ...): the codes of tokens [j0, j1) of a block, token j0 in
// the lowest bits. Built from the last token down, so each step shifts by the constant B.
template <int B>
inline __m512i block_word(const float* xb, int64_t ld, int64_t d, int64_t j0, int64_t j1, __m512 vz, __m512 vs,
                          __m512 vk, __m512 vlo, __m512 vhi, __m512i voff) {
  __m512i acc = _mm512_setzero_si512();
  for (int64_t j = j1 - 1; j >= j0; --j) {
    __m512 v = _mm512_div_ps(_mm512_sub_ps(_mm512_loadu_ps(xb + j * ld + d), vz), vs);
    v = _mm512_mul_ps(_mm512_min_ps(_mm512_max_ps(v, vlo), vhi), vk);  // keep 0: code = offset
    acc = _mm512_or_si512(_mm512_slli_epi32(acc, B), _mm512_add_epi32(_mm512_cvtps_epi32(v), voff));
  }
  return acc;
}

// dst[c * n + w] = acc[w][c] for 16 channels c and n = 2 or 4 words each (a small transpose).
inline void store_interleaved(uint32_t* dst, const __m512i* acc, int64_t n) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  if (n == 2) {
    _mm512_storeu_si512(dst, _mm512_permutex2var_epi32(acc[0], lo, acc[1]));
    _mm512_storeu_si512(dst + 16, _mm512_permutex2var_epi32(acc[0], hi, acc[1]));
    return;
  }
  // Pairs (w0, w1) and (w2, w3) per channel, then the pairs interleaved as 64-bit units.
  const __m512i p_lo = _mm512_permutex2var_epi32(acc[0], lo, acc[1]), p_hi = _mm512_permutex2var_epi32(acc[0], hi, acc[1]);
  const __m512i q_lo = _mm512_permutex2var_epi32(acc[2], lo, acc[3]), q_hi = _mm512_permutex2var_epi32(acc[2], hi, acc[3]);
  const __m512i lo64 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), hi64 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  _mm512_storeu_si512(dst, _mm512_permutex2var_epi64(p_lo, lo64, q_lo));
  _mm512_storeu_si512(dst + 16, _mm512_permutex2var_epi64(p_lo, hi64, q_lo));
  _mm512_storeu_si512(dst + 32, _mm512_permutex2var_epi64(p_hi, lo64, q_hi));
  _mm512_storeu_si512(dst + 48, _mm512_permutex2var_epi64(p_hi, hi64, q_hi));
}

// Per-channel quantization of T rows (blocks of G tokens, each channel its own group) for any B,
// with D a multiple of 16; false otherwise. Per block: ranges of 16 channels at a time kept in
// registers over the G rows, the D codings together, then each word of cpw consecutive tokens
// built in a register for 16 channels.
template <int B, typename P>
bool quantize_per_channel(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                          P* scales, P* zeros) {
  if (D % 16 != 0) return false;
  constexpr int cpw = cpw_of<B>();
  const int64_t G = q.group, Wc = kvlab::kernels::packed_words(G, B);
  thread_local std::vector<float> buf;
  thread_local std::vector<uint32_t> word;
  buf.resize(5 * D);
  word.resize(D);
  float* lo = buf.data();
  float* hi = lo + D;
  float* zr = hi + D;
  float* st = zr + D;
  float* kp = st + D;
  const GroupCoding u = uniform_coding<B>(q.symmetric);
  const __m512 vlo = _mm512_set1_ps(u.lo), vhi = _mm512_set1_ps(u.hi);
  const __m512i voff = _mm512_set1_epi32(u.offset);
  for (int64_t n = 0; n < T / G; ++n) {
    const float* xb = x + n * G * ld;
    __mmask16 nan = 0;
    for (int64_t d0 = 0; d0 < D; d0 += 128) {  // bands of up to 128 channels, read row by row
      const int nc = static_cast<int>(std::min<int64_t>(8, (D - d0) / 16));
      __m512 mn[8], mx[8];
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c)
        if (c < nc) mn[c] = mx[c] = _mm512_loadu_ps(xb + d0 + 16 * c);
      for (int64_t j = 0; j < G; ++j) {
        const float* r = xb + j * ld + d0;
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c)
          if (c < nc) {
            const __m512 v = _mm512_loadu_ps(r + 16 * c);
            mn[c] = _mm512_min_ps(mn[c], v), mx[c] = _mm512_max_ps(mx[c], v);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
          }
      }
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c)
        if (c < nc) _mm512_storeu_ps(lo + d0 + 16 * c, mn[c]), _mm512_storeu_ps(hi + d0 + 16 * c, mx[c]);
    }
    bool bad = nan != 0;
    for (int64_t d = 0; d < D; ++d) bad |= !std::isfinite(lo[d]) || !std::isfinite(hi[d]);
    if (bad) report_non_finite(xb, G, ld, 0, D, n * G);
    group_codings<B, P>(lo, hi, D, q.symmetric, scales + n * D, q.symmetric ? nullptr : zeros + n * D, zr, st, kp,
                        [&](int64_t d) {
                          P s, z;
                          group_coding<B, P>(lo[d], hi[d], q.symmetric, &s, &z, n * G, d);
                        });
    uint32_t* cb = codes + n * D * Wc;
    if (Wc == 2 || Wc == 4) {  // a channel's words side by side: build them all, then interleave
      for (int64_t d = 0; d < D; d += 16) {
        const __m512 vz = _mm512_loadu_ps(zr + d), vs = _mm512_loadu_ps(st + d), vk = _mm512_loadu_ps(kp + d);
        __m512i acc[4];
        for (int64_t w = 0; w < Wc; ++w)
          acc[w] = block_word<B>(xb, ld, d, w * cpw, std::min<int64_t>(G, (w + 1) * cpw), vz, vs, vk, vlo, vhi, voff);
        store_interleaved(cb + d * Wc, acc, Wc);
      }
    } else {
      for (int64_t w = 0; w < Wc; ++w) {
        const int64_t j0 = w * cpw, j1 = std::min<int64_t>(G, j0 + cpw);
        for (int64_t d = 0; d < D; d += 16)
          _mm512_storeu_si512(word.data() + d,
                              block_word<B>(xb, ld, d, j0, j1, _mm512_loadu_ps(zr + d), _mm512_loadu_ps(st + d),
                                         _mm512_loadu_ps(kp + d), vlo, vhi, voff));
        for (int64_t d = 0; d < D; ++d) cb[d * Wc + w] = word[d];
      }
    }
  }
  return true;
}

}  // namespace avx512_quant
#pragma GCC diagnostic pop
