// AVX-512 versions of the two 2-bit decode loops (KIVI's layout: keys per-channel, values
// per-token), by table lookup instead of unpack-convert-multiply. Included by kernel_loops.h,
// inside its namespace, after kernel_loops_avx2.h, only when the translation unit is compiled
// with AVX-512 F/VL/BW/DQ (kernels_avx512.cpp).
//
// The idea: two 2-bit codes make a 4-bit index, and vpermps picks one of 16 floats by the low
// 4 bits of each lane. For a pair of channels (keys) or tokens (values) the 16 possible values
// of a*c0 + b*c1 (+ zero terms) are built once in a register, and then each lane of 16 tokens
// (keys) or 16 channels (values) costs shift, rotate, bit-select, permute and add: about half
// the work of unpacking both codes to floats and multiplying.
// Index lane j takes bits [0, 2) from code j of the first word (shifted right by 2j) and bits
// [2, 4) from code j of the second (rotated right by 2j - 2); bits above 4 are ignored.
// GCC 12's AVX-512 intrinsics pass an undefined vector as the unused merge source, which
// -Wmaybe-uninitialized reports at every use; the warning is about the header, not this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace avx512_loops {

struct PairIndex {
  __m512i shift = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  __m512i rot = _mm512_setr_epi32(30, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28);
  __m512i low2 = _mm512_set1_epi32(3);
  // lo[i] = i & 3 and hi[i] = i >> 2: the table for (a, b) is a * lo + b * hi.
  __m512 lo = _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
  __m512 hi = _mm512_setr_ps(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);

  inline __m512i operator()(uint32_t first, uint32_t second) const {
    const __m512i a = _mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int32_t>(first)), shift);
    const __m512i b = _mm512_rorv_epi32(_mm512_set1_epi32(static_cast<int32_t>(second)), rot);
    return _mm512_ternarylogic_epi32(low2, a, b, 0xCA);  // low2 ? a : b, bit by bit
  }
  inline __m512i single(uint32_t word) const {  // bits [2, 4) hold the next code; lo ignores them
    return _mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int32_t>(word)), shift);
  }
};

constexpr int kMaxHeads = 4;  // per pass over the codes: up to 16 accumulators in registers

// sums[h][k] (16 token lanes of word w0 + k) = sum over channel pairs p of the pair's table for
// head h, looked up by the pair's codes. The table (qs_2p * lo + qs_2p+1 * hi) is built in a
// register on the multiply pipes, which the lookups leave idle, and serves all NW words.
template <int HB, int NW>
inline void key_pair_sums(const PairIndex& ix, const uint32_t* cb, int64_t Wc, int64_t w0, int64_t P,
                          const float* qs, int64_t D, __m512 (*sums)[2]) {
  __m512 acc[2][HB][NW];  // two chains (even and odd pairs), so that the adds never wait long
#pragma GCC unroll 4
  for (int h = 0; h < HB; ++h)
#pragma GCC unroll 2
    for (int k = 0; k < NW; ++k) acc[0][h][k] = acc[1][h][k] = _mm512_setzero_ps();
  auto pair = [&](int u, int64_t p) {
    __m512i idx[NW];
#pragma GCC unroll 2
    for (int k = 0; k < NW; ++k) idx[k] = ix(cb[2 * p * Wc + w0 + k], cb[(2 * p + 1) * Wc + w0 + k]);
#pragma GCC unroll 4
    for (int h = 0; h < HB; ++h) {
      const __m512 tab = _mm512_fmadd_ps(_mm512_set1_ps(qs[h * D + 2 * p + 1]), ix.hi,
                                         _mm512_mul_ps(_mm512_set1_ps(qs[h * D + 2 * p]), ix.lo));
#pragma GCC unroll 2
      for (int k = 0; k < NW; ++k) acc[u][h][k] = _mm512_add_ps(acc[u][h][k], _mm512_permutexvar_ps(idx[k], tab));
    }
  };
  int64_t p = 0;
  for (; p + 2 <= P; p += 2) pair(0, p), pair(1, p + 1);
  if (p < P) pair(0, p);
  for (int h = 0; h < HB; ++h)
    for (int k = 0; k < NW; ++k) sums[h][k] = _mm512_add_ps(acc[0][h][k], acc[1][h][k]);
}

// o[h * D + 16 * (w0 + k)] += sum over the tile's nt tokens of p * (s c + z) for NW consecutive
// words (16 channels each), two tokens per lookup. wv [h][tile][ng] holds p * s and up
// [h][tile][ng] the pairs' zero terms (at the pair's first token). Token-major, so that a
// group's table is built once per token pair and serves all of the group's words.
template <int NW, int HB>
inline void value_words_sum(const PairIndex& ix, const uint32_t* ct, int64_t Wt, int64_t w0, int64_t wpg,
                            int64_t nt, const float* wv, const float* up, int64_t ng, int64_t tile, float* o,
                            int64_t D) {
  // Loops over k (words) and h (heads) are unrolled so that acc stays in registers.
  __m512 acc[HB][NW];
  const float* w[HB][NW];  // word k's group row of p * s, and of the zero terms
  const float* u[HB][NW];
  bool fresh[NW];  // word k starts a group (or the block): build the table
#pragma GCC unroll 16
  for (int k = 0; k < NW; ++k) {
    const int64_t g = (w0 + k) / wpg;
    fresh[k] = k == 0 || (w0 + k) % wpg == 0;
#pragma GCC unroll 4
    for (int h = 0; h < HB; ++h) {
      acc[h][k] = _mm512_setzero_ps();
      w[h][k] = wv + h * tile * ng + g, u[h][k] = up + h * tile * ng + g;  // rows [tile][ng]
    }
  }
  const uint32_t* c0 = ct + w0;
  int64_t i = 0;
  for (; i + 2 <= nt; i += 2) {
    __m512 tab[HB];
#pragma GCC unroll 16
    for (int k = 0; k < NW; ++k) {
      if (fresh[k])
#pragma GCC unroll 4
        for (int h = 0; h < HB; ++h)
          tab[h] = _mm512_fmadd_ps(_mm512_set1_ps(w[h][k][(i + 1) * ng]), ix.hi,
                                   _mm512_fmadd_ps(_mm512_set1_ps(w[h][k][i * ng]), ix.lo,
                                                   _mm512_set1_ps(u[h][k][i * ng])));
      const __m512i idx = ix(c0[i * Wt + k], c0[(i + 1) * Wt + k]);
#pragma GCC unroll 4
      for (int h = 0; h < HB; ++h) acc[h][k] = _mm512_add_ps(acc[h][k], _mm512_permutexvar_ps(idx, tab[h]));
    }
  }
  if (i < nt) {  // the last token of an odd-length stream
#pragma GCC unroll 16
    for (int k = 0; k < NW; ++k) {
      const __m512i idx = ix.single(c0[i * Wt + k]);
#pragma GCC unroll 4
      for (int h = 0; h < HB; ++h) {
        const __m512 tab = _mm512_fmadd_ps(_mm512_set1_ps(w[h][k][i * ng]), ix.lo, _mm512_set1_ps(u[h][k][i * ng]));
        acc[h][k] = _mm512_add_ps(acc[h][k], _mm512_permutexvar_ps(idx, tab));
      }
    }
  }
  for (int h = 0; h < HB; ++h)
    for (int k = 0; k < NW; ++k) {
      float* oh = o + h * D + (w0 + k) * 16;
      _mm512_storeu_ps(oh, _mm512_add_ps(_mm512_loadu_ps(oh), acc[h][k]));
    }
}

// All words of a tile for HB heads, in chunks whose HB x NW accumulators fit in registers
// (at most 16: 8 words for one or two heads, 4 for four).
template <int HB>
inline void value_tile_sum(const PairIndex& ix, const uint32_t* ct, int64_t Wt, int64_t wpg, int64_t nt,
                           const float* wv, const float* up, int64_t ng, int64_t tile, float* o, int64_t D) {
  int64_t w0 = 0;
  if constexpr (HB <= 2)
    for (; w0 + 8 <= Wt; w0 += 8) value_words_sum<8, HB>(ix, ct, Wt, w0, wpg, nt, wv, up, ng, tile, o, D);
  for (; w0 + 4 <= Wt; w0 += 4) value_words_sum<4, HB>(ix, ct, Wt, w0, wpg, nt, wv, up, ng, tile, o, D);
  if (w0 + 2 <= Wt) value_words_sum<2, HB>(ix, ct, Wt, w0, wpg, nt, wv, up, ng, tile, o, D), w0 += 2;
  if (w0 < Wt) value_words_sum<1, HB>(ix, ct, Wt, w0, wpg, nt, wv, up, ng, tile, o, D);
}

// scores[h * S + t] = q_h . key_t for 2-bit per-channel packed keys. False when D is odd (the
// AVX2 loop runs instead).
inline bool key_scores_per_channel_2bit(const float* q, int64_t n_q, int64_t D, const PackedStream& k,
                                        float* scores, int64_t S) {
  if (D % 2 != 0) return false;
  static const PairIndex ix;
  const int64_t G = k.shape.group, Wc = (G + 15) / 16, P = D / 2;
  const float off = k.shape.symmetric ? 1.f : 0.f;  // (1 << (2 - 1)) - 1
  thread_local std::vector<float> buf;
  buf.resize(n_q * D + 2 * D + n_q);
  float* qs = buf.data();
  float* s = qs + n_q * D;
  float* z = s + D;
  float* bias = z + D;
  for (int64_t n = 0; n < k.tokens / G; ++n) {
    // q . (c s + z) = (q * s) . c + q . z, and (q*s)_d c_d + (q*s)_{d+1} c_{d+1} is a table lookup.
    avx2_loops::params_to_float(k, k.scales, n * D, D, s);
    if (k.shape.symmetric)
      for (int64_t d = 0; d < D; ++d) z[d] = -off * s[d];
    else
      avx2_loops::params_to_float(k, k.zeros, n * D, D, z);
    for (int64_t h = 0; h < n_q; ++h) {
      const float* qh = q + h * D;
      __m512 b16 = _mm512_setzero_ps();  // in lanes: a serial sum would cost 4 cycles per channel
      int64_t d = 0;
      for (; d + 16 <= D; d += 16) {
        const __m512 qv = _mm512_loadu_ps(qh + d);
        _mm512_storeu_ps(qs + h * D + d, _mm512_mul_ps(qv, _mm512_loadu_ps(s + d)));
        b16 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(z + d), b16);
      }
      float b = _mm512_reduce_add_ps(b16);
      for (; d < D; ++d) qs[h * D + d] = qh[d] * s[d], b += qh[d] * z[d];
      bias[h] = b;
    }
    const uint32_t* cb = k.codes + n * D * Wc;
    for (int64_t w0 = 0; w0 < Wc; w0 += 2) {  // two words (32 tokens) per pass
      const int nw = w0 + 2 <= Wc ? 2 : 1;
      for (int64_t h0 = 0; h0 < n_q; h0 += kMaxHeads) {
        const int hb = static_cast<int>(std::min<int64_t>(kMaxHeads, n_q - h0));
        __m512 sums[kMaxHeads][2];
        const float* qh = qs + h0 * D;
#define KVLAB_CASE(H)                                                     \
  case H:                                                                 \
    if (nw == 2) key_pair_sums<H, 2>(ix, cb, Wc, w0, P, qh, D, sums);     \
    else key_pair_sums<H, 1>(ix, cb, Wc, w0, P, qh, D, sums);             \
    break;
        switch (hb) { KVLAB_CASE(1) KVLAB_CASE(2) KVLAB_CASE(3) KVLAB_CASE(4) }
#undef KVLAB_CASE
        for (int h = 0; h < hb; ++h)
          for (int j = 0; j < nw; ++j) {  // a word past G (G % 16 != 0) holds only G - 16 w tokens
            const int64_t nt = std::min<int64_t>(16, G - 16 * (w0 + j));
            _mm512_mask_storeu_ps(scores + (h0 + h) * S + n * G + 16 * (w0 + j), static_cast<__mmask16>((1u << nt) - 1u),
                                  _mm512_add_ps(sums[h][j], _mm512_set1_ps(bias[h0 + h])));
          }
      }
    }
  }
  return true;
}

// out[h] += sum_t p[h, t] value_t for 2-bit per-token packed values whose groups and rows hold
// whole words (G and D multiples of 16); false otherwise (the AVX2 loop runs instead).
inline bool value_sum_per_token_2bit(const float* p, int64_t n_q, int64_t D, const PackedStream& v, int64_t S,
                                     float* out) {
  const int64_t G = v.shape.group, T = v.tokens;
  if (G % 16 != 0 || D % 16 != 0) return false;
  static const PairIndex ix;
  const int64_t Wt = D / 16, ng = D / G, wpg = G / 16;
  const float off = v.shape.symmetric ? 1.f : 0.f;
  constexpr int64_t kTile = 128;  // tokens per tile (even): their weights stay in L1
  thread_local std::vector<float> buf;
  buf.resize(2 * kTile * ng + 2 * n_q * kTile * ng);
  float* st = buf.data();             // [kTile][ng] scales as floats
  float* zt = st + kTile * ng;        // [kTile][ng] zeros (or -off * scale)
  float* wv = zt + kTile * ng;        // [h][kTile][ng]: p * s
  float* up = wv + n_q * kTile * ng;  // [h][kTile][ng]: p_t z_t + p_{t+1} z_{t+1} at even t
  // A vector holds 16 / ng tokens' parameters; lane l is token l / ng, group l % ng. Its partner
  // token in a pair sits ng lanes away (l ^ ng), as ng is a power of two.
  const bool vec = ng == 1 || ng == 2 || ng == 4 || ng == 8;
  const int64_t tpv = vec ? 16 / ng : 0;
  alignas(64) int32_t spread_i[16], partner_i[16];
  for (int l = 0; l < 16; ++l) spread_i[l] = vec ? l / static_cast<int>(ng) : 0, partner_i[l] = vec ? l ^ static_cast<int>(ng) : l;
  const __m512i spread = _mm512_load_si512(spread_i), partner = _mm512_load_si512(partner_i);
  for (int64_t t0 = 0; t0 < T; t0 += kTile) {
    const int64_t t1 = std::min(T, t0 + kTile), nt = t1 - t0;
    avx2_loops::params_to_float(v, v.scales, t0 * ng, nt * ng, st);
    if (v.shape.symmetric)
      for (int64_t i = 0; i < nt * ng; ++i) zt[i] = -off * st[i];
    else
      avx2_loops::params_to_float(v, v.zeros, t0 * ng, nt * ng, zt);
    const int64_t nv = vec ? nt / tpv * tpv : 0;  // tokens done 16 / ng at a time; tpv is even
    for (int64_t h = 0; h < n_q; ++h) {
      const float* ph = p + h * S + t0;
      float* w = wv + h * kTile * ng;
      float* u = up + h * kTile * ng;
      for (int64_t i = 0; i < nv; i += tpv) {
        const __m512 pv = _mm512_permutexvar_ps(spread, _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << tpv) - 1u), ph + i));
        _mm512_storeu_ps(w + i * ng, _mm512_mul_ps(pv, _mm512_loadu_ps(st + i * ng)));
        const __m512 pz = _mm512_mul_ps(pv, _mm512_loadu_ps(zt + i * ng));
        _mm512_storeu_ps(u + i * ng, _mm512_add_ps(pz, _mm512_permutexvar_ps(partner, pz)));
      }
      for (int64_t i = nv; i < nt; ++i)
        for (int64_t g = 0; g < ng; ++g) w[i * ng + g] = ph[i] * st[i * ng + g];
      for (int64_t i = nv & ~int64_t{1}; i < nt; i += 2)
        for (int64_t g = 0; g < ng; ++g)
          u[i * ng + g] = i + 1 < nt ? ph[i] * zt[i * ng + g] + ph[i + 1] * zt[(i + 1) * ng + g] : ph[i] * zt[i * ng + g];
    }
    const uint32_t* ct = v.codes + t0 * Wt;
    int64_t h0 = 0;  // heads 4 at a time (each word's index serves all four), then 2, then 1
    for (; h0 + 4 <= n_q; h0 += 4)
      value_tile_sum<4>(ix, ct, Wt, wpg, nt, wv + h0 * kTile * ng, up + h0 * kTile * ng, ng, kTile, out + h0 * D, D);
    for (; h0 + 2 <= n_q; h0 += 2)
      value_tile_sum<2>(ix, ct, Wt, wpg, nt, wv + h0 * kTile * ng, up + h0 * kTile * ng, ng, kTile, out + h0 * D, D);
    if (h0 < n_q)
      value_tile_sum<1>(ix, ct, Wt, wpg, nt, wv + h0 * kTile * ng, up + h0 * kTile * ng, ng, kTile, out + h0 * D, D);
  }
  return true;
}

}  // namespace avx512_loops
#pragma GCC diagnostic pop
