// AVX2 + FMA + F16C versions of the two loops that dominate decode over a KIVI-style cache:
// scores against per-channel packed keys and the weighted sum over per-token packed values.
// Included by kernel_loops.h, inside its namespace, only when the translation unit is compiled with
// those extensions (<immintrin.h> is included there).
// Both keep their accumulators in registers: for one packed word (cpw codes) and a few query
// heads at a time, the codes are unpacked once (broadcast, variable shift, mask, convert) and
// fed to one FMA per head and 8 lanes.
namespace avx2_loops {

// Unpacks one 32-bit word of B-bit codes into NV vectors of 8 floats (lanes past cpw read 0).
template <int B>
struct WordUnpacker {
  static constexpr int cpw = B == 3 ? 10 : 32 / B;
  static constexpr int NV = (cpw + 7) / 8;
  __m256i shift[NV];
  __m256i mask = _mm256_set1_epi32((1 << B) - 1);
  WordUnpacker() {
    for (int k = 0; k < NV; ++k) {
      alignas(32) int32_t s[8];
      for (int j = 0; j < 8; ++j) s[j] = 8 * k + j < cpw ? (8 * k + j) * B : 32;  // a shift of 32 gives 0
      shift[k] = _mm256_load_si256(reinterpret_cast<const __m256i*>(s));
    }
  }
  inline void operator()(uint32_t word, __m256* out) const {
    const __m256i w = _mm256_set1_epi32(static_cast<int32_t>(word));
    for (int k = 0; k < NV; ++k) out[k] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, shift[k]), mask));
  }
};

inline void params_to_float(const PackedStream& s, const void* p, int64_t first, int64_t n, float* out) {
  if (s.param == ParamType::F32) {
    std::memcpy(out, static_cast<const float*>(p) + first, n * sizeof(float));
    return;
  }
  const auto* h = static_cast<const uint16_t*>(p) + first;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) out[i] = _cvtsh_ss(h[i]);
}

inline float hmax(__m256 v) {
  const __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 y = _mm_max_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_max_ss(y, _mm_movehdup_ps(y)));
}

inline float hsum(__m256 v) {
  const __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 y = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(y, _mm_movehdup_ps(y)));
}

// Most heads whose accumulators (NV vectors each) fit in registers beside the unpacked codes.
template <int B>
constexpr int max_heads() {
  return WordUnpacker<B>::NV >= 4 ? 2 : WordUnpacker<B>::NV == 2 ? 4 : 8;
}

// Independent accumulator sets so that FMA latency, not throughput, never bounds a loop with few
// heads: U sets of HB * NV registers, about 4 in flight (more spill to the stack).
constexpr int unroll_for(int live) { return live >= 4 ? 1 : 4 / live; }  // beyond ~4 sets, registers spill

// acc[h][.] = sum_d qs[h0 + h][d] * code_{d, word w}; cb[d * Wc + w] holds channel d's word w.
template <int B, int HB>
inline void key_word_scores(const WordUnpacker<B>& un, const uint32_t* cb, int64_t Wc, int64_t w, int64_t D,
                            const float* qs, float* dst /* [HB][NV * 8] */) {
  constexpr int NV = WordUnpacker<B>::NV, U = unroll_for(HB * NV);
  __m256 acc[U][HB][NV];
  for (int u = 0; u < U; ++u)
    for (int h = 0; h < HB; ++h)
      for (int k = 0; k < NV; ++k) acc[u][h][k] = _mm256_setzero_ps();
  __m256 c[NV];
  int64_t d = 0;
  for (; d + U <= D; d += U)
    for (int u = 0; u < U; ++u) {
      un(cb[(d + u) * Wc + w], c);
      for (int h = 0; h < HB; ++h) {
        const __m256 a = _mm256_broadcast_ss(qs + h * D + d + u);
        for (int k = 0; k < NV; ++k) acc[u][h][k] = _mm256_fmadd_ps(a, c[k], acc[u][h][k]);
      }
    }
  for (; d < D; ++d) {
    un(cb[d * Wc + w], c);
    for (int h = 0; h < HB; ++h) {
      const __m256 a = _mm256_broadcast_ss(qs + h * D + d);
      for (int k = 0; k < NV; ++k) acc[0][h][k] = _mm256_fmadd_ps(a, c[k], acc[0][h][k]);
    }
  }
  for (int h = 0; h < HB; ++h)
    for (int k = 0; k < NV; ++k) {
      __m256 sum = acc[0][h][k];
      for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[u][h][k]);
      _mm256_storeu_ps(dst + (h * NV + k) * 8, sum);
    }
}

template <int B>
void key_scores_per_channel(const float* q, int64_t n_q, int64_t D, const PackedStream& k, float* scores,
                            int64_t S) {
  constexpr int cpw = WordUnpacker<B>::cpw, NV = WordUnpacker<B>::NV, HMAX = max_heads<B>();
  static const WordUnpacker<B> un;
  const int64_t G = k.shape.group, Wc = kvlab::kernels::packed_words(G, B);
  const float off = k.shape.symmetric ? static_cast<float>((1 << (B - 1)) - 1) : 0.f;
  thread_local std::vector<float> buf;
  buf.resize(n_q * D + 3 * D + HMAX * NV * 8 + n_q);
  float* qs = buf.data();
  float* s = qs + n_q * D;
  float* z = s + D;
  float* lanes = z + D;
  float* bias = lanes + HMAX * NV * 8;
  for (int64_t n = 0; n < k.tokens / G; ++n) {
    // The block's scales and zeros fold into the query: q . (c s + z) = (q * s) . c + q . z.
    params_to_float(k, k.scales, n * D, D, s);
    if (k.shape.symmetric)
      for (int64_t d = 0; d < D; ++d) z[d] = -off * s[d];
    else
      params_to_float(k, k.zeros, n * D, D, z);
    for (int64_t h = 0; h < n_q; ++h) {
      const float* qh = q + h * D;
      __m256 b8 = _mm256_setzero_ps();
      int64_t d = 0;
      for (; d + 8 <= D; d += 8) {
        const __m256 qv = _mm256_loadu_ps(qh + d);
        _mm256_storeu_ps(qs + h * D + d, _mm256_mul_ps(qv, _mm256_loadu_ps(s + d)));
        b8 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(z + d), b8);
      }
      float b = hsum(b8);
      for (; d < D; ++d) qs[h * D + d] = qh[d] * s[d], b += qh[d] * z[d];
      bias[h] = b;
    }
    const uint32_t* cb = k.codes + n * D * Wc;
    for (int64_t w = 0; w < Wc; ++w) {
      const int64_t t0 = w * cpw, nt = std::min<int64_t>(cpw, G - t0);
      for (int64_t h0 = 0; h0 < n_q; h0 += HMAX) {
        const int64_t hb = std::min<int64_t>(HMAX, n_q - h0);
        switch (hb) {
#define KVLAB_CASE(N) \
  case N: if constexpr (N <= HMAX) key_word_scores<B, N>(un, cb, Wc, w, D, qs + h0 * D, lanes); break;
          KVLAB_CASE(1) KVLAB_CASE(2) KVLAB_CASE(3) KVLAB_CASE(4) KVLAB_CASE(5) KVLAB_CASE(6) KVLAB_CASE(7)
          KVLAB_CASE(8)
#undef KVLAB_CASE
        }
        for (int64_t h = 0; h < hb; ++h)
          for (int64_t j = 0; j < nt; ++j) scores[(h0 + h) * S + n * G + t0 + j] = lanes[h * NV * 8 + j] + bias[h0 + h];
      }
    }
  }
}

// acc[h][.] += sum_t w[h][t - t0] * code_{t, word wi} for t in [t0, t1), where w = p * scale was
// formed per tile (rows of stride ws).
template <int B, int HB>
inline void value_word_sum(const WordUnpacker<B>& un, const uint32_t* codes, int64_t Wt, int64_t wi, int64_t t0,
                           int64_t t1, const float* w, int64_t ws, float* acc_io /* [HB][NV * 8] */) {
  constexpr int NV = WordUnpacker<B>::NV, U = unroll_for(HB * NV);
  __m256 acc[U][HB][NV];
  for (int h = 0; h < HB; ++h)
    for (int k = 0; k < NV; ++k) {
      acc[0][h][k] = _mm256_loadu_ps(acc_io + (h * NV + k) * 8);
      for (int u = 1; u < U; ++u) acc[u][h][k] = _mm256_setzero_ps();
    }
  __m256 c[NV];
  auto step = [&](int u, int64_t t) {
    un(codes[t * Wt + wi], c);
    for (int h = 0; h < HB; ++h) {
      const __m256 a = _mm256_broadcast_ss(w + h * ws + (t - t0));
      for (int k = 0; k < NV; ++k) acc[u][h][k] = _mm256_fmadd_ps(a, c[k], acc[u][h][k]);
    }
  };
  int64_t t = t0;
  for (; t + U <= t1; t += U)
    for (int u = 0; u < U; ++u) step(u, t + u);
  for (; t < t1; ++t) step(0, t);
  for (int h = 0; h < HB; ++h)
    for (int k = 0; k < NV; ++k) {
      __m256 sum = acc[0][h][k];
      for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[u][h][k]);
      _mm256_storeu_ps(acc_io + (h * NV + k) * 8, sum);
    }
}

// Per-token packed values whose groups hold whole words (G a multiple of cpw). Returns false when
// the layout does not fit, and the portable loop runs instead.
template <int B>
bool value_sum_per_token(const float* p, int64_t n_q, int64_t D, const PackedStream& v, int64_t S, float* out) {
  constexpr int cpw = WordUnpacker<B>::cpw, NV = WordUnpacker<B>::NV, HMAX = max_heads<B>();
  const int64_t G = v.shape.group, T = v.tokens;
  if (G % cpw != 0 || D % cpw != 0) return false;
  static const WordUnpacker<B> un;
  const int64_t Wt = kvlab::kernels::packed_words(D, B), ng = D / G, words_per_group = G / cpw;
  const float off = v.shape.symmetric ? static_cast<float>((1 << (B - 1)) - 1) : 0.f;
  constexpr int64_t kTile = 256;  // tokens per tile: their codes and weights stay in L1
  thread_local std::vector<float> buf;
  buf.resize(2 * T * ng + Wt * n_q * NV * 8 + 4 * n_q * ng + n_q * kTile);
  float* st = buf.data();                 // [T][ng] scales as floats
  float* zf = st + T * ng;                // [T][ng] zeros (or -off * scale)
  float* acc = zf + T * ng;               // [word][h][NV * 8]
  float* zsum = acc + Wt * n_q * NV * 8;  // [h][ng]
  float* w = zsum + n_q * ng;             // [h][kTile]: p * scale for one group and tile
  params_to_float(v, v.scales, 0, T * ng, st);
  if (v.shape.symmetric)
    for (int64_t i = 0; i < T * ng; ++i) zf[i] = -off * st[i];
  else
    params_to_float(v, v.zeros, 0, T * ng, zf);
  // Zero points: out[h][channels of g] += sum_t p[h][t] z[t][g] (four interleaved partial sums
  // so that the additions do not wait on each other).
  for (int64_t h = 0; h < n_q; ++h) {
    float* zs = zsum + 4 * h * ng;  // [4][ng]
    std::fill(zs, zs + 4 * ng, 0.f);
    const float* ph = p + h * S;
    int64_t t = 0;
    for (; t + 4 <= T; t += 4)
      for (int u = 0; u < 4; ++u)
        for (int64_t g = 0; g < ng; ++g) zs[u * ng + g] += ph[t + u] * zf[(t + u) * ng + g];
    for (; t < T; ++t)
      for (int64_t g = 0; g < ng; ++g) zs[g] += ph[t] * zf[t * ng + g];
    for (int64_t d = 0; d < D; ++d) {
      const int64_t g = d / G;
      out[h * D + d] += (zs[g] + zs[ng + g]) + (zs[2 * ng + g] + zs[3 * ng + g]);
    }
  }
  std::fill(acc, acc + Wt * n_q * NV * 8, 0.f);
  for (int64_t t0 = 0; t0 < T; t0 += kTile) {
    const int64_t t1 = std::min(T, t0 + kTile), nt = t1 - t0;
    for (int64_t g = 0; g < ng; ++g) {
      for (int64_t h = 0; h < n_q; ++h) {  // strided reads, contiguous writes (no 4K-aliased stores)
        const float* ph = p + h * S + t0;
        const float* s = st + t0 * ng + g;
        float* wh = w + h * kTile;
        for (int64_t i = 0; i < nt; ++i) wh[i] = ph[i] * s[i * ng];
      }
      for (int64_t wg = 0; wg < words_per_group; ++wg) {
        const int64_t wi = g * words_per_group + wg;
        for (int64_t h0 = 0; h0 < n_q; h0 += HMAX) {
          const int64_t hb = std::min<int64_t>(HMAX, n_q - h0);
          float* a = acc + (wi * n_q + h0) * NV * 8;
          const float* wh = w + h0 * kTile;
          switch (hb) {
#define KVLAB_CASE(N) \
  case N: if constexpr (N <= HMAX) value_word_sum<B, N>(un, v.codes, Wt, wi, t0, t1, wh, kTile, a); break;
            KVLAB_CASE(1) KVLAB_CASE(2) KVLAB_CASE(3) KVLAB_CASE(4) KVLAB_CASE(5) KVLAB_CASE(6) KVLAB_CASE(7)
            KVLAB_CASE(8)
#undef KVLAB_CASE
          }
        }
      }
    }
  }
  for (int64_t wi = 0; wi < Wt; ++wi)
    for (int64_t h = 0; h < n_q; ++h)
      for (int64_t j = 0; j < cpw; ++j) out[h * D + wi * cpw + j] += acc[(wi * n_q + h) * NV * 8 + j];
  return true;
}

}  // namespace avx2_loops
