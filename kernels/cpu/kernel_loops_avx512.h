// AVX-512 versions of the 2- and 4-bit decode loops (KIVI's layout: keys per-channel, values
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
#pragma GCC diagnostic ignored "-Wuninitialized"
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

// Per block n of per-channel keys: q . (c s + z) = (q * s) . c + q . z. compute() fills qs = q * s
// [n_q][D] and bias = q . z per head; off is the symmetric code offset.
struct BlockQueries {
  std::vector<float> buf;
  float *qs = nullptr, *bias = nullptr, *s = nullptr, *z = nullptr;  // s, z [D]: the block's parameters

  void reset(int64_t n_q, int64_t D) {
    buf.resize(n_q * D + 2 * D + n_q);
    qs = buf.data(), s = qs + n_q * D, z = s + D, bias = z + D;
  }

  void compute(const float* q, int64_t n_q, int64_t D, const PackedStream& k, int64_t n, float off) {
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
  }
};

// scores[h * S + t] = q_h . key_t for 2-bit per-channel packed keys. False when D is odd (the
// AVX2 loop runs instead).
inline bool key_scores_per_channel_2bit(const float* q, int64_t n_q, int64_t D, const PackedStream& k,
                                        float* scores, int64_t S) {
  if (D % 2 != 0) return false;
  static const PairIndex ix;
  const int64_t G = k.shape.group, Wc = (G + 15) / 16, P = D / 2;
  const float off = k.shape.symmetric ? 1.f : 0.f;  // (1 << (2 - 1)) - 1
  thread_local BlockQueries bq;
  bq.reset(n_q, D);
  const float *qs = bq.qs, *bias = bq.bias;
  for (int64_t n = 0; n < k.tokens / G; ++n) {
    bq.compute(q, n_q, D, k, n, off);
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

// Per tile of per-token values, for each head: w = p * s and u = p * z per token and group, in
// rows [tile][ng]. With paired, u at an even token holds the pair's sum p_t z_t + p_t+1 z_t+1.
struct TileWeights {
  static constexpr int64_t kTile = 128;  // tokens per tile (even): their weights stay in L1
  int64_t ng = 0;
  std::vector<float> buf;
  float *st = nullptr, *zt = nullptr, *wv = nullptr, *up = nullptr;
  __m512i spread, partner;
  bool vec = false;
  int64_t tpv = 0;

  void reset(int64_t n_q, int64_t groups) {
    ng = groups;
    buf.resize(2 * kTile * ng + 2 * n_q * kTile * ng);
    st = buf.data();              // [kTile][ng] scales as floats
    zt = st + kTile * ng;         // [kTile][ng] zeros (or -off * scale)
    wv = zt + kTile * ng;         // [h][kTile][ng]
    up = wv + n_q * kTile * ng;   // [h][kTile][ng]
    // A vector holds 16 / ng tokens' parameters; lane l is token l / ng, group l % ng. Its
    // partner token in a pair sits ng lanes away (l ^ ng), as ng is a power of two.
    vec = ng == 1 || ng == 2 || ng == 4 || ng == 8;
    tpv = vec ? 16 / ng : 0;
    alignas(64) int32_t spread_i[16], partner_i[16];
    for (int l = 0; l < 16; ++l)
      spread_i[l] = vec ? l / static_cast<int>(ng) : 0, partner_i[l] = vec ? l ^ static_cast<int>(ng) : l;
    spread = _mm512_load_si512(spread_i), partner = _mm512_load_si512(partner_i);
  }

  void compute(const float* p, int64_t n_q, int64_t S, const PackedStream& v, float off, int64_t t0, int64_t nt,
               bool paired) {
    avx2_loops::params_to_float(v, v.scales, t0 * ng, nt * ng, st);
    if (v.shape.symmetric)
      for (int64_t i = 0; i < nt * ng; ++i) zt[i] = -off * st[i];
    else
      avx2_loops::params_to_float(v, v.zeros, t0 * ng, nt * ng, zt);
    const int64_t nv = vec ? nt / tpv * tpv : 0;  // tokens done 16 / ng at a time; tpv is even
    const __mmask16 first = static_cast<__mmask16>((1u << tpv) - 1u);
    for (int64_t h = 0; h < n_q; ++h) {
      const float* ph = p + h * S + t0;
      float* w = wv + h * kTile * ng;
      float* u = up + h * kTile * ng;
      for (int64_t i = 0; i < nv; i += tpv) {
        const __m512 pv = _mm512_permutexvar_ps(spread, _mm512_maskz_loadu_ps(first, ph + i));
        _mm512_storeu_ps(w + i * ng, _mm512_mul_ps(pv, _mm512_loadu_ps(st + i * ng)));
        const __m512 pz = _mm512_mul_ps(pv, _mm512_loadu_ps(zt + i * ng));
        _mm512_storeu_ps(u + i * ng, paired ? _mm512_add_ps(pz, _mm512_permutexvar_ps(partner, pz)) : pz);
      }
      for (int64_t i = nv; i < nt; ++i)
        for (int64_t g = 0; g < ng; ++g) w[i * ng + g] = ph[i] * st[i * ng + g];
      if (!paired)
        for (int64_t i = nv; i < nt; ++i)
          for (int64_t g = 0; g < ng; ++g) u[i * ng + g] = ph[i] * zt[i * ng + g];
      else
        for (int64_t i = nv & ~int64_t{1}; i < nt; i += 2)
          for (int64_t g = 0; g < ng; ++g)
            u[i * ng + g] =
                i + 1 < nt ? ph[i] * zt[i * ng + g] + ph[i + 1] * zt[(i + 1) * ng + g] : ph[i] * zt[i * ng + g];
    }
  }
};

// ---- 4 bits: one code is the whole index, and the table is a * (0..15) + b -----------------
// Two 4-bit words (8 codes each) read as one 64-bit value and broadcast: lane 2m holds code m of
// the first word, lane 2m + 1 code m of the second; sums come out interleaved that way and are
// put back in order once, at the end.
struct NibbleIndex {
  __m512i shift = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  __m512i unzip = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  __m512 ramp = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

  inline __m512i operator()(const uint32_t* two_words) const {
    int64_t both;
    std::memcpy(&both, two_words, sizeof both);
    return _mm512_srlv_epi32(_mm512_set1_epi64(both), shift);
  }
  inline __m512i single(uint32_t word) const {  // odd lanes repeat the word: their sums are not kept
    return _mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int32_t>(word)), shift);
  }
};

// sums[h][k] (interleaved token lanes of word pair w0 + 2k, or of the single word w0 when SINGLE)
// = sum over channels d of (qs_d * ramp)[code], the table built once per channel for NP pairs.
template <int HB, int NP, bool SINGLE>
inline void key_nibble_sums(const NibbleIndex& ix, const uint32_t* cb, int64_t Wc, int64_t w0, int64_t D,
                            const float* qs, __m512 (*sums)[2]) {
  __m512 acc[2][HB][NP];  // two chains (even and odd channels)
#pragma GCC unroll 4
  for (int h = 0; h < HB; ++h)
#pragma GCC unroll 2
    for (int k = 0; k < NP; ++k) acc[0][h][k] = acc[1][h][k] = _mm512_setzero_ps();
  auto channel = [&](int u, int64_t d) {
    __m512i idx[NP];
#pragma GCC unroll 2
    for (int k = 0; k < NP; ++k) idx[k] = SINGLE ? ix.single(cb[d * Wc + w0]) : ix(cb + d * Wc + w0 + 2 * k);
#pragma GCC unroll 4
    for (int h = 0; h < HB; ++h) {
      const __m512 tab = _mm512_mul_ps(_mm512_set1_ps(qs[h * D + d]), ix.ramp);
#pragma GCC unroll 2
      for (int k = 0; k < NP; ++k) acc[u][h][k] = _mm512_add_ps(acc[u][h][k], _mm512_permutexvar_ps(idx[k], tab));
    }
  };
  int64_t d = 0;
  for (; d + 2 <= D; d += 2) channel(0, d), channel(1, d + 1);
  if (d < D) channel(0, d);
  for (int h = 0; h < HB; ++h)
    for (int k = 0; k < NP; ++k) sums[h][k] = _mm512_add_ps(acc[0][h][k], acc[1][h][k]);
}

// scores[h * S + t] = q_h . key_t for 4-bit per-channel packed keys (any G, D).
inline bool key_scores_per_channel_4bit(const float* q, int64_t n_q, int64_t D, const PackedStream& k,
                                        float* scores, int64_t S) {
  static const NibbleIndex ix;
  const int64_t G = k.shape.group, Wc = (G + 7) / 8;
  const float off = k.shape.symmetric ? 7.f : 0.f;  // (1 << (4 - 1)) - 1
  thread_local BlockQueries bq;
  bq.reset(n_q, D);
  const float *qs = bq.qs, *bias = bq.bias;
  for (int64_t n = 0; n < k.tokens / G; ++n) {
    bq.compute(q, n_q, D, k, n, off);
    const uint32_t* cb = k.codes + n * D * Wc;
    for (int64_t w0 = 0; w0 < Wc;) {  // two word pairs (32 tokens) per pass, then one pair, then a word
      const int np = w0 + 4 <= Wc ? 2 : 1;
      const bool single = w0 + 2 > Wc;
      for (int64_t h0 = 0; h0 < n_q; h0 += kMaxHeads) {
        const int hb = static_cast<int>(std::min<int64_t>(kMaxHeads, n_q - h0));
        __m512 sums[kMaxHeads][2];
        const float* qh = qs + h0 * D;
#define KVLAB_CASE(H)                                                                  \
  case H:                                                                              \
    if (single) key_nibble_sums<H, 1, true>(ix, cb, Wc, w0, D, qh, sums);              \
    else if (np == 2) key_nibble_sums<H, 2, false>(ix, cb, Wc, w0, D, qh, sums);       \
    else key_nibble_sums<H, 1, false>(ix, cb, Wc, w0, D, qh, sums);                    \
    break;
        switch (hb) { KVLAB_CASE(1) KVLAB_CASE(2) KVLAB_CASE(3) KVLAB_CASE(4) }
#undef KVLAB_CASE
        for (int h = 0; h < hb; ++h)
          for (int j = 0; j < (single ? 1 : np); ++j) {
            const int64_t t = 8 * (w0 + 2 * j), nt = std::min<int64_t>(single ? 8 : 16, G - t);
            const __m512 ordered = _mm512_permutexvar_ps(ix.unzip, sums[h][j]);
            _mm512_mask_storeu_ps(scores + (h0 + h) * S + n * G + t, static_cast<__mmask16>((1u << nt) - 1u),
                                  _mm512_add_ps(ordered, _mm512_set1_ps(bias[h0 + h])));
          }
      }
      w0 += single ? 1 : 2 * np;
    }
  }
  return true;
}

// o[h * D + 16 * (c0 + k)] += sum over the tile's nt tokens of p * (s c + z) for NC consecutive
// 16-channel chunks (word pairs); the table w * ramp + u is built once per token and group.
template <int NC, int HB>
inline void value_nibble_sum(const NibbleIndex& ix, const uint32_t* ct, int64_t Wt, int64_t c0, int64_t cpg,
                             int64_t nt, const float* wv, const float* up, int64_t ng, int64_t tile, float* o,
                             int64_t D) {
  __m512 acc[HB][NC];
  const float* w[HB][NC];
  const float* u[HB][NC];
  bool fresh[NC];
#pragma GCC unroll 16
  for (int k = 0; k < NC; ++k) {
    const int64_t g = (c0 + k) / cpg;
    fresh[k] = k == 0 || (c0 + k) % cpg == 0;
#pragma GCC unroll 4
    for (int h = 0; h < HB; ++h) {
      acc[h][k] = _mm512_setzero_ps();
      w[h][k] = wv + h * tile * ng + g, u[h][k] = up + h * tile * ng + g;
    }
  }
  const uint32_t* c = ct + 2 * c0;
  for (int64_t i = 0; i < nt; ++i) {
    __m512 tab[HB];
#pragma GCC unroll 16
    for (int k = 0; k < NC; ++k) {
      if (fresh[k])
#pragma GCC unroll 4
        for (int h = 0; h < HB; ++h)
          tab[h] = _mm512_fmadd_ps(_mm512_set1_ps(w[h][k][i * ng]), ix.ramp, _mm512_set1_ps(u[h][k][i * ng]));
      const __m512i idx = ix(c + i * Wt + 2 * k);
#pragma GCC unroll 4
      for (int h = 0; h < HB; ++h) acc[h][k] = _mm512_add_ps(acc[h][k], _mm512_permutexvar_ps(idx, tab[h]));
    }
  }
  for (int h = 0; h < HB; ++h)
    for (int k = 0; k < NC; ++k) {
      float* oh = o + h * D + (c0 + k) * 16;
      _mm512_storeu_ps(oh, _mm512_add_ps(_mm512_loadu_ps(oh), _mm512_permutexvar_ps(ix.unzip, acc[h][k])));
    }
}

// ---- per-token values, 2 or 4 bits --------------------------------------------------------
// Both lay a row out in units of 16 channels (a 2-bit word, a 4-bit word pair) and share the
// tile weights; they differ in how a unit's codes index the table.
template <int B>
using LutIndex = std::conditional_t<B == 2, PairIndex, NibbleIndex>;

template <int B, int NU, int HB>
inline void value_units_sum(const LutIndex<B>& ix, const uint32_t* ct, int64_t Wt, int64_t u0, int64_t upg,
                            int64_t nt, const float* wv, const float* up, int64_t ng, int64_t tile, float* o,
                            int64_t D) {
  if constexpr (B == 2) value_words_sum<NU, HB>(ix, ct, Wt, u0, upg, nt, wv, up, ng, tile, o, D);
  else value_nibble_sum<NU, HB>(ix, ct, Wt, u0, upg, nt, wv, up, ng, tile, o, D);
}

// All units of a tile for HB heads, in chunks whose HB x NU accumulators fit in registers
// (at most 16: 8 units for one or two heads, 4 for four).
template <int B, int HB>
inline void value_tile_sum(const LutIndex<B>& ix, const uint32_t* ct, int64_t Wt, int64_t upg, int64_t nt,
                           const float* wv, const float* up, int64_t ng, int64_t tile, float* o, int64_t D) {
  const int64_t nu = D / 16;
  int64_t u0 = 0;
  if constexpr (HB <= 2)
    for (; u0 + 8 <= nu; u0 += 8) value_units_sum<B, 8, HB>(ix, ct, Wt, u0, upg, nt, wv, up, ng, tile, o, D);
  for (; u0 + 4 <= nu; u0 += 4) value_units_sum<B, 4, HB>(ix, ct, Wt, u0, upg, nt, wv, up, ng, tile, o, D);
  if (u0 + 2 <= nu) value_units_sum<B, 2, HB>(ix, ct, Wt, u0, upg, nt, wv, up, ng, tile, o, D), u0 += 2;
  if (u0 < nu) value_units_sum<B, 1, HB>(ix, ct, Wt, u0, upg, nt, wv, up, ng, tile, o, D);
}

// out[h] += sum_t p[h, t] value_t for 2- or 4-bit per-token packed values whose groups and rows
// hold whole units (G and D multiples of 16); false otherwise (the AVX2 loop runs instead).
template <int B>
inline bool value_sum_per_token_lut(const float* p, int64_t n_q, int64_t D, const PackedStream& v, int64_t S,
                                    float* out) {
  static_assert(B == 2 || B == 4);
  const int64_t G = v.shape.group, T = v.tokens;
  if (G % 16 != 0 || D % 16 != 0) return false;
  static const LutIndex<B> ix;
  const int64_t Wt = D * B / 32, ng = D / G, upg = G / 16;
  const float off = v.shape.symmetric ? static_cast<float>((1 << (B - 1)) - 1) : 0.f;
  constexpr int64_t kTile = TileWeights::kTile;
  thread_local TileWeights tw;
  tw.reset(n_q, ng);
  for (int64_t t0 = 0; t0 < T; t0 += kTile) {
    const int64_t nt = std::min(T - t0, kTile);
    tw.compute(p, n_q, S, v, off, t0, nt, B == 2);  // 2 bits: one table per token pair
    const uint32_t* ct = v.codes + t0 * Wt;
    auto heads = [&](auto hb, int64_t h0) {
      value_tile_sum<B, decltype(hb)::value>(ix, ct, Wt, upg, nt, tw.wv + h0 * kTile * ng, tw.up + h0 * kTile * ng,
                                             ng, kTile, out + h0 * D, D);
    };
    int64_t h0 = 0;  // heads 4 at a time (each unit's index serves all four), then 2, then 1
    for (; h0 + 4 <= n_q; h0 += 4) heads(std::integral_constant<int, 4>{}, h0);
    for (; h0 + 2 <= n_q; h0 += 2) heads(std::integral_constant<int, 2>{}, h0);
    if (h0 < n_q) heads(std::integral_constant<int, 1>{}, h0);
  }
  return true;
}

}  // namespace avx512_loops
#pragma GCC diagnostic pop
