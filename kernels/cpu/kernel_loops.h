// The hot loops of the CPU kernels, written once and compiled three times: kernels_generic.cpp
// (the distribution's baseline ISA), kernels_avx2.cpp (-mavx2 -mfma -mf16c) and kernels_avx512.cpp
// (the same plus AVX-512 F/VL/BW/DQ); dispatch.cpp picks one at run time. Loops are shaped for the
// auto-vectorizer: fixed-width inner loops, no reductions across lanes inside them, no branches
// per element. Include only from those files, with KVLAB_KERNEL_ISA defined (the namespace the
// loops go in, so the builds never share a symbol).
//
// Codes are bit-identical to the reference kernels: the same float operations in the same order,
// with round-half-even done by the 1.5 * 2^23 trick after clamping to [lo, hi] (which commutes
// with rounding because the bounds are integers).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kvlab/common/error.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/kernels/packing.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KVLAB_AVX2_LOOPS 1
#include <immintrin.h>
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#define KVLAB_AVX512_LOOPS 1
#endif
#endif

#ifndef KVLAB_KERNEL_ISA
#error "define KVLAB_KERNEL_ISA before including kernel_loops.h"
#endif

namespace kvlab::kernels::KVLAB_KERNEL_ISA {

using kvlab::fail;
using kvlab::kernels::Granularity;
using kvlab::kernels::PackedStream;
using kvlab::kernels::ParamType;
using kvlab::kernels::QuantShape;
using kvlab::kernels::Rows;
using kvlab::kernels::RowType;

constexpr int kLanes = 8;

inline float round_even(float v) {  // valid for |v| < 2^22; the compiler must not fold it (no -ffast-math)
  const float magic = 12582912.0f;
  return (v + magic) - magic;
}

// v rounded to the parameter type (round to nearest even), as a float; to_param stores it.
template <typename P>
inline float param_round(float v) {
  return static_cast<float>(static_cast<P>(v));
}
template <typename P>
inline P to_param(float rounded) {
  return static_cast<P>(rounded);
}
#ifdef KVLAB_AVX2_LOOPS  // F16C does in one instruction what c10::Half does in software
template <>
inline float param_round<c10::Half>(float v) {
  return _cvtsh_ss(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT));
}
template <>
inline c10::Half to_param<c10::Half>(float rounded) {
  return c10::Half(_cvtss_sh(rounded, _MM_FROUND_TO_NEAREST_INT), c10::Half::from_bits());
}
#endif

template <int B>
constexpr int cpw_of() {
  return B == 3 ? 10 : 32 / B;
}

// Names the first non-finite value of rows x[t * ld + d], t < T, d in [d0, d1).
[[noreturn]] __attribute__((noinline, cold)) inline void report_non_finite(const float* x, int64_t T, int64_t ld, int64_t d0, int64_t d1,
                                           int64_t token0) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = d0; d < d1; ++d)
      if (!std::isfinite(x[t * ld + d]))
        fail("kernels: non-finite value {} in K/V at token {}, channel {}", x[t * ld + d], token0 + t, d);
  fail("kernels: non-finite value in K/V");
}

// Packs n codes (one per uint32) into words, cpw codes a word.
template <int B>
inline void pack_row(const uint32_t* c, int64_t n, uint32_t* words) {
  constexpr int cpw = cpw_of<B>();
  const int64_t full = n / cpw;
  for (int64_t w = 0; w < full; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < cpw; ++j) word |= c[w * cpw + j] << (j * B);
    words[w] = word;
  }
  if (full * cpw < n) {
    uint32_t word = 0;
    for (int64_t j = 0; j < n - full * cpw; ++j) word |= c[full * cpw + j] << (j * B);
    words[full] = word;
  }
}

// Unpacks the cpw codes of each of nw words into floats (out holds nw * cpw).
template <int B>
inline void unpack_row_f(const uint32_t* words, int64_t nw, float* out) {
  constexpr int cpw = cpw_of<B>();
  constexpr uint32_t mask = (1u << B) - 1u;
  for (int64_t w = 0; w < nw; ++w) {
    const uint32_t word = words[w];
    for (int j = 0; j < cpw; ++j) out[w * cpw + j] = static_cast<float>(static_cast<int32_t>((word >> (j * B)) & mask));
  }
}

// ---- quantize ---------------------------------------------------------------------------------

// How one group's values become codes: code = int(round(clamp((x - zero) / step, lo, hi)) * keep)
// + offset. keep = 0 for a constant group (S = 0: every code 0), where step = 1 avoids 0 / 0.
struct GroupCoding {
  float zero, step, keep, lo, hi;
  int32_t offset;
};

[[noreturn]] __attribute__((noinline, cold)) inline void fail_param_overflow(float lo, float hi, int64_t token,
                                                                             int64_t channel) {
  fail("kernels: group range [{}, {}] overflows the parameter type at token {}, channel {} (use fp32 parameters)", lo,
       hi, token, channel);
}

// From a group's range: the stored scale (and zero) rounded to P, and the coding that uses them.
template <int B, typename P>
inline GroupCoding group_coding(float lo, float hi, bool symmetric, P* scale, P* zero, int64_t token,
                                int64_t channel) {
  if (symmetric) {
    const int L = (1 << (B - 1)) - 1;
    const float amax = std::max(std::fabs(lo), std::fabs(hi));
    const float S = param_round<P>(amax / static_cast<float>(L));
    if (!std::isfinite(S)) fail_param_overflow(lo, hi, token, channel);
    *scale = to_param<P>(S);
    return {0.f, S == 0.f ? 1.f : S, S == 0.f ? 0.f : 1.f, -static_cast<float>(L), static_cast<float>(L), L};
  }
  const float L = static_cast<float>((1 << B) - 1);
  const float S = param_round<P>((hi - lo) / L);
  const float Z = param_round<P>(lo);
  if (!std::isfinite(S) || !std::isfinite(Z)) fail_param_overflow(lo, hi, token, channel);
  *scale = to_param<P>(S);
  *zero = to_param<P>(Z);
  return {Z, S == 0.f ? 1.f : S, S == 0.f ? 0.f : 1.f, 0.f, L, 0};
}

inline uint32_t encode(float x, const GroupCoding& c) {
  float v = (x - c.zero) / c.step;
  v = std::min(std::max(v, c.lo), c.hi);
  return static_cast<uint32_t>(static_cast<int32_t>(round_even(v) * c.keep) + c.offset);
}

#ifdef KVLAB_AVX2_LOOPS
#include "quantize_avx2.h"
#endif
#ifdef KVLAB_AVX512_LOOPS
#include "quantize_avx512.h"
#endif

// One token: D values in groups of G consecutive channels.
template <int B, typename P>
void quantize_token(const float* x, int64_t D, const QuantShape& q, uint32_t* cbuf, uint32_t* words, P* scales,
                    P* zeros, int64_t token) {
#ifdef KVLAB_AVX2_LOOPS
  if (avx2_quant::quantize_token<B, P>(x, D, q, words, scales, zeros, token)) return;
#endif
  const int64_t G = q.group;
  for (int64_t g0 = 0; g0 < D; g0 += G) {
    const float* xg = x + g0;
    float mn[kLanes], mx[kLanes], chk[kLanes];
    for (int j = 0; j < kLanes; ++j) mn[j] = mx[j] = xg[0], chk[j] = 0.f;
    int64_t i = 0;
    for (; i + kLanes <= G; i += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const float v = xg[i + j];
        mn[j] = v < mn[j] ? v : mn[j];
        mx[j] = v > mx[j] ? v : mx[j];
        chk[j] += v * 0.f;  // NaN if any value is NaN or Inf
      }
    for (; i < G; ++i) {
      const float v = xg[i];
      mn[0] = v < mn[0] ? v : mn[0];
      mx[0] = v > mx[0] ? v : mx[0];
      chk[0] += v * 0.f;
    }
    float lo = mn[0], hi = mx[0], c = chk[0];
    for (int j = 1; j < kLanes; ++j) lo = std::min(lo, mn[j]), hi = std::max(hi, mx[j]), c += chk[j];
    if (c != 0.f) report_non_finite(x, 1, 0, g0, g0 + G, token);  // c is 0 unless NaN appeared
    const int64_t gi = g0 / G;
    const GroupCoding gc =
        group_coding<B, P>(lo, hi, q.symmetric, scales + gi, q.symmetric ? nullptr : zeros + gi, token, g0);
    for (int64_t k = 0; k < G; ++k) cbuf[g0 + k] = encode(xg[k], gc);
  }
  pack_row<B>(cbuf, D, words);
}

template <int B, typename P>
void quantize_per_token(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                        P* scales, P* zeros) {
#ifdef KVLAB_AVX512_LOOPS
  if (avx512_quant::quantize_per_token<B, P>(x, T, D, ld, q, codes, scales, zeros)) return;
#endif
  const int64_t Wt = kvlab::kernels::packed_words(D, B), ng = D / q.group;
  std::vector<uint32_t> cbuf(D);
  for (int64_t t = 0; t < T; ++t)
    quantize_token<B, P>(x + t * ld, D, q, cbuf.data(), codes + t * Wt, scales + t * ng,
                         q.symmetric ? nullptr : zeros + t * ng, t);
}

// Blocks of G tokens, one group per channel: min/max run down the tokens, vectorized across channels.
template <int B, typename P>
void quantize_per_channel(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                          P* scales, P* zeros) {
#ifdef KVLAB_AVX512_LOOPS
  if (avx512_quant::quantize_per_channel<B, P>(x, T, D, ld, q, codes, scales, zeros)) return;
#endif
  constexpr int cpw = cpw_of<B>();
  const int64_t G = q.group, Wc = kvlab::kernels::packed_words(G, B);
  std::vector<float> mn(D), mx(D), chk(D), zr(D), st(D), keep(D);
  std::vector<uint32_t> word(D);
  for (int64_t n = 0; n < T / G; ++n) {
    const float* xb = x + n * G * ld;
    for (int64_t d = 0; d < D; ++d) mn[d] = mx[d] = xb[d], chk[d] = 0.f;
    for (int64_t j = 0; j < G; ++j) {
      const float* r = xb + j * ld;
      for (int64_t d = 0; d < D; ++d) {
        const float v = r[d];
        mn[d] = v < mn[d] ? v : mn[d];
        mx[d] = v > mx[d] ? v : mx[d];
        chk[d] += v * 0.f;
      }
    }
    float c = 0.f;
    for (int64_t d = 0; d < D; ++d) c += chk[d];
    if (c != 0.f) report_non_finite(xb, G, ld, 0, D, n * G);
    GroupCoding gc{};
    for (int64_t d = 0; d < D; ++d) {
      gc = group_coding<B, P>(mn[d], mx[d], q.symmetric, scales + n * D + d,
                              q.symmetric ? nullptr : zeros + n * D + d, n * G, d);
      zr[d] = gc.zero, st[d] = gc.step, keep[d] = gc.keep;
    }
    uint32_t* cb = codes + n * D * Wc;
    for (int64_t w = 0; w < Wc; ++w) {
      std::fill(word.begin(), word.end(), 0u);
      for (int64_t j = w * cpw; j < std::min<int64_t>(G, (w + 1) * cpw); ++j) {
        const float* r = xb + j * ld;
        const int shift = static_cast<int>(j - w * cpw) * B;
#ifdef KVLAB_AVX2_LOOPS
        avx2_quant::encode_row_into_words(r, zr.data(), st.data(), keep.data(), gc, shift, word.data(), D);
#else
        for (int64_t d = 0; d < D; ++d) {
          float v = (r[d] - zr[d]) / st[d];
          v = std::min(std::max(v, gc.lo), gc.hi);
          word[d] |= static_cast<uint32_t>(static_cast<int32_t>(round_even(v) * keep[d]) + gc.offset) << shift;
        }
#endif
      }
      for (int64_t d = 0; d < D; ++d) cb[d * Wc + w] = word[d];
    }
  }
}

// ---- dequantize -------------------------------------------------------------------------------

template <int B, typename P>
void dequantize_per_token(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                          const QuantShape& q, float* out, int64_t ld) {
  constexpr int cpw = cpw_of<B>();
  const int64_t Wt = kvlab::kernels::packed_words(D, B), G = q.group, ng = D / G;
  const float off = q.symmetric ? static_cast<float>((1 << (B - 1)) - 1) : 0.f;
  std::vector<float> cf(Wt * cpw);
  for (int64_t t = 0; t < T; ++t) {
    unpack_row_f<B>(codes + t * Wt, Wt, cf.data());
    for (int64_t g = 0; g < ng; ++g) {
      const float S = static_cast<float>(scales[t * ng + g]);
      const float Z = q.symmetric ? -off * S : static_cast<float>(zeros[t * ng + g]);
      float* o = out + t * ld + g * G;
      const float* c = cf.data() + g * G;
      if (q.symmetric)
        for (int64_t k = 0; k < G; ++k) o[k] = (c[k] - off) * S;
      else
        for (int64_t k = 0; k < G; ++k) o[k] = c[k] * S + Z;
    }
  }
}

template <int B, typename P>
void dequantize_per_channel(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                            const QuantShape& q, float* out, int64_t ld) {
  constexpr int cpw = cpw_of<B>();
  const int64_t G = q.group, Wc = kvlab::kernels::packed_words(G, B);
  const float off = q.symmetric ? static_cast<float>((1 << (B - 1)) - 1) : 0.f;
  std::vector<float> cf(Wc * cpw);
  for (int64_t n = 0; n < T / G; ++n)
    for (int64_t d = 0; d < D; ++d) {
      unpack_row_f<B>(codes + (n * D + d) * Wc, Wc, cf.data());
      const float S = static_cast<float>(scales[n * D + d]);
      const float Z = q.symmetric ? 0.f : static_cast<float>(zeros[n * D + d]);
      float* o = out + n * G * ld + d;
      if (q.symmetric)
        for (int64_t j = 0; j < G; ++j) o[j * ld] = (cf[j] - off) * S;
      else
        for (int64_t j = 0; j < G; ++j) o[j * ld] = cf[j] * S + Z;
    }
}

// ---- packed decode attention ------------------------------------------------------------------

template <typename P>
inline float param_at(const void* p, int64_t i) {
  return static_cast<float>(static_cast<const P*>(p)[i]);
}

inline float load_param(const PackedStream& s, const void* p, int64_t i) {
  return s.param == ParamType::F16 ? param_at<c10::Half>(p, i) : param_at<float>(p, i);
}

#ifdef KVLAB_AVX2_LOOPS
#include "kernel_loops_avx2.h"
#endif
#ifdef KVLAB_AVX512_LOOPS
#include "kernel_loops_avx512.h"
#endif

// scores[h * S + t] += q_h . key_t for the packed keys t < k.tokens.
template <int B>
void packed_key_scores(const float* q, int64_t n_q, int64_t D, const PackedStream& k, float* scores, int64_t S,
                       float* tmp) {
  constexpr int cpw = cpw_of<B>();
  const int64_t G = k.shape.group;
  const float off = k.shape.symmetric ? static_cast<float>((1 << (B - 1)) - 1) : 0.f;
#ifdef KVLAB_AVX512_LOOPS
  if constexpr (B == 2)
    if (k.granularity == Granularity::PerChannel &&
        avx512_loops::key_scores_per_channel_2bit(q, n_q, D, k, scores, S))
      return;
  if constexpr (B == 4)
    if (k.granularity == Granularity::PerChannel &&
        avx512_loops::key_scores_per_channel_4bit(q, n_q, D, k, scores, S))
      return;
#endif
#ifdef KVLAB_AVX2_LOOPS
  if (k.granularity == Granularity::PerChannel) return avx2_loops::key_scores_per_channel<B>(q, n_q, D, k, scores, S);
#endif
  if (k.granularity == Granularity::PerChannel) {
    // Block n: q . key_t = sum_d (q_d s_nd) c_td + sum_d q_d z_nd (zero term: q_d * (z_nd - off s_nd)).
    const int64_t Wc = kvlab::kernels::packed_words(G, B), span = Wc * cpw;
    float* qs = tmp;                   // [n_q, D]
    float* acc = tmp + n_q * D;        // [n_q, span]
    float* cf = acc + n_q * span;      // [span]
    for (int64_t n = 0; n < k.tokens / G; ++n) {
      for (int64_t h = 0; h < n_q; ++h) {
        float bias = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          const float s = load_param(k, k.scales, n * D + d);
          const float z = k.shape.symmetric ? -off * s : load_param(k, k.zeros, n * D + d);
          qs[h * D + d] = q[h * D + d] * s;
          bias += q[h * D + d] * z;
        }
        for (int64_t j = 0; j < span; ++j) acc[h * span + j] = bias;
      }
      const uint32_t* cb = k.codes + n * D * Wc;
      for (int64_t d = 0; d < D; ++d) {
        unpack_row_f<B>(cb + d * Wc, Wc, cf);
        for (int64_t h = 0; h < n_q; ++h) {
          const float a = qs[h * D + d];
          float* ah = acc + h * span;
          for (int64_t j = 0; j < span; ++j) ah[j] += a * cf[j];
        }
      }
      for (int64_t h = 0; h < n_q; ++h)
        for (int64_t j = 0; j < G; ++j) scores[h * S + n * G + j] = acc[h * span + j];
    }
    return;
  }
  // Per-token groups: q . key_t = sum_g s_tg (q_g . c_tg) + z_tg * sum(q_g).
  const int64_t Wt = kvlab::kernels::packed_words(D, B), ng = D / G;
  float* qsum = tmp;                 // [n_q, ng]
  float* cf = tmp + n_q * ng;        // [Wt * cpw]
  for (int64_t h = 0; h < n_q; ++h)
    for (int64_t g = 0; g < ng; ++g) {
      float s = 0.f;
      for (int64_t k2 = 0; k2 < G; ++k2) s += q[h * D + g * G + k2];
      qsum[h * ng + g] = s;
    }
  for (int64_t t = 0; t < k.tokens; ++t) {
    unpack_row_f<B>(k.codes + t * Wt, Wt, cf);
    for (int64_t h = 0; h < n_q; ++h) {
      const float* qh = q + h * D;
      float total = 0.f;
      for (int64_t g = 0; g < ng; ++g) {
        float part[kLanes] = {};
        int64_t i = 0;
        for (; i + kLanes <= G; i += kLanes)
          for (int j = 0; j < kLanes; ++j) part[j] += qh[g * G + i + j] * cf[g * G + i + j];
        float dot = 0.f;
        for (; i < G; ++i) dot += qh[g * G + i] * cf[g * G + i];
        for (int j = 0; j < kLanes; ++j) dot += part[j];
        const float s = load_param(k, k.scales, t * ng + g);
        const float z = k.shape.symmetric ? -off * s : load_param(k, k.zeros, t * ng + g);
        total += s * dot + z * qsum[h * ng + g];
      }
      scores[h * S + t] = total;
    }
  }
}

// out[h] += sum_t p[h, t] value_t over the packed values t < v.tokens; p rows have stride S.
template <int B>
void packed_value_sum(const float* p, int64_t n_q, int64_t D, const PackedStream& v, int64_t S, float* out,
                      float* tmp) {
  constexpr int cpw = cpw_of<B>();
  const int64_t G = v.shape.group;
  const float off = v.shape.symmetric ? static_cast<float>((1 << (B - 1)) - 1) : 0.f;
#ifdef KVLAB_AVX512_LOOPS
  if constexpr (B == 2 || B == 4)
    if (v.granularity == Granularity::PerToken && avx512_loops::value_sum_per_token_lut<B>(p, n_q, D, v, S, out))
      return;
#endif
#ifdef KVLAB_AVX2_LOOPS
  if (v.granularity == Granularity::PerToken && avx2_loops::value_sum_per_token<B>(p, n_q, D, v, S, out)) return;
#endif
  if (v.granularity == Granularity::PerToken) {
    // value_td = s_tg c_td + z_tg: out_d += (p_t s_tg) c_td, and the zero terms collect per group.
    const int64_t Wt = kvlab::kernels::packed_words(D, B), ng = D / G;
    float* cf = tmp;                      // [Wt * cpw]
    float* zacc = tmp + Wt * cpw;         // [n_q, ng]
    for (int64_t i = 0; i < n_q * ng; ++i) zacc[i] = 0.f;
    for (int64_t t = 0; t < v.tokens; ++t) {
      unpack_row_f<B>(v.codes + t * Wt, Wt, cf);
      for (int64_t g = 0; g < ng; ++g) {
        const float s = load_param(v, v.scales, t * ng + g);
        const float z = v.shape.symmetric ? -off * s : load_param(v, v.zeros, t * ng + g);
        for (int64_t h = 0; h < n_q; ++h) {
          const float pt = p[h * S + t];
          const float a = pt * s;
          zacc[h * ng + g] += pt * z;
          float* oh = out + h * D + g * G;
          const float* c = cf + g * G;
          for (int64_t k2 = 0; k2 < G; ++k2) oh[k2] += a * c[k2];
        }
      }
    }
    for (int64_t h = 0; h < n_q; ++h)
      for (int64_t g = 0; g < ng; ++g)
        for (int64_t k2 = 0; k2 < G; ++k2) out[h * D + g * G + k2] += zacc[h * ng + g];
    return;
  }
  // Per-channel blocks: out_d += s_nd (p_block . c_d) + z_nd sum(p_block).
  const int64_t Wc = kvlab::kernels::packed_words(G, B);
  float* cf = tmp;   // [Wc * cpw]
  for (int64_t n = 0; n < v.tokens / G; ++n) {
    const uint32_t* cb = v.codes + n * D * Wc;
    for (int64_t d = 0; d < D; ++d) {
      unpack_row_f<B>(cb + d * Wc, Wc, cf);
      const float s = load_param(v, v.scales, n * D + d);
      const float z = v.shape.symmetric ? -off * s : load_param(v, v.zeros, n * D + d);
      for (int64_t h = 0; h < n_q; ++h) {
        const float* ph = p + h * S + n * G;
        float part[kLanes] = {}, psum[kLanes] = {};
        int64_t j = 0;
        for (; j + kLanes <= G; j += kLanes)
          for (int l = 0; l < kLanes; ++l) part[l] += ph[j + l] * cf[j + l], psum[l] += ph[j + l];
        float dot = 0.f, ps = 0.f;
        for (; j < G; ++j) dot += ph[j] * cf[j], ps += ph[j];
        for (int l = 0; l < kLanes; ++l) dot += part[l], ps += psum[l];
        out[h * D + d] += s * dot + z * ps;
      }
    }
  }
}

// Scratch floats the packed loops need (beyond the n_q * S scores), for any layout.
inline int64_t loop_scratch(int64_t n_q, int64_t D, const PackedStream& k, const PackedStream& v) {
  const int64_t span = std::max(k.shape.group, v.shape.group) + 32;
  return n_q * D + n_q * span + span + (D + 32) + n_q * (D + 1);
}

// exp(x) for x <= 0, vectorizable: 2^n * p(r), |r| <= ln2/2, degree-6 polynomial (rel. error ~2e-7).
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = round_even(x * 1.44269504f);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// ---- full-precision rows ----------------------------------------------------------------------

// Rows are read in blocks of this many tokens; 16-bit rows are widened a block at a time into a
// scratch of kRowBlock * D floats (16 KB at D = 128: it stays in L1 while every head uses it).
constexpr int64_t kRowBlock = 32;

// n * D values of 16-bit rows as floats.
template <typename R>
inline void widen(const R* src, int64_t n, float* dst) {
  int64_t i = 0;
#ifdef KVLAB_AVX2_LOOPS
  const auto* u = reinterpret_cast<const uint16_t*>(src);
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(u + i));
    if constexpr (std::is_same_v<R, c10::Half>)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    else  // bf16 is the top half of an fp32
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
#endif
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

// Rows [t0, t0 + n) of r as fp32: the rows themselves when they are fp32, else widened into buf.
inline const float* row_block(const Rows& r, int64_t t0, int64_t n, int64_t D, float* buf) {
  switch (r.type) {
    case RowType::F16: widen(static_cast<const c10::Half*>(r.data) + t0 * D, n * D, buf); return buf;
    case RowType::BF16: widen(static_cast<const c10::BFloat16*>(r.data) + t0 * D, n * D, buf); return buf;
    default: return static_cast<const float*>(r.data) + t0 * D;
  }
}

// scores[h * S + t] = q_h . k_t for n fp32 rows k of stride D.
inline void key_block_scores(const float* q, int64_t n_q, int64_t D, const float* k, int64_t n, float* scores,
                             int64_t S) {
#ifdef KVLAB_AVX2_LOOPS
  // Spelled out: left to itself, the AVX-512 build vectorizes the loop below across heads with
  // permutes and runs at half the speed.
  if (D % 32 == 0) {
    for (int64_t t = 0; t < n; ++t) {
      const float* kr = k + t * D;
      for (int64_t h = 0; h < n_q; ++h) {
        const float* qh = q + h * D;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < D; i += 32) {
          a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i), _mm256_loadu_ps(kr + i), a0);
          a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i + 8), _mm256_loadu_ps(kr + i + 8), a1);
          a2 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i + 16), _mm256_loadu_ps(kr + i + 16), a2);
          a3 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i + 24), _mm256_loadu_ps(kr + i + 24), a3);
        }
        scores[h * S + t] = avx2_loops::hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
      }
    }
    return;
  }
#endif
  for (int64_t t = 0; t < n; ++t) {  // token-outer: each key row is read once for all heads
    const float* kr = k + t * D;
    for (int64_t h = 0; h < n_q; ++h) {
      const float* qh = q + h * D;
      float part[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= D; i += kLanes)
        for (int j = 0; j < kLanes; ++j) part[j] += qh[i + j] * kr[i + j];
      float dot = 0.f;
      for (; i < D; ++i) dot += qh[i] * kr[i];
      for (int j = 0; j < kLanes; ++j) dot += part[j];
      scores[h * S + t] = dot;
    }
  }
}

// scores[h * S + t] = q_h . k_full_t for every full-precision key row.
inline void full_key_scores(const float* q, int64_t n_q, int64_t D, const Rows& k_full, float* scores, int64_t S,
                            float* rowbuf) {
  for (int64_t t0 = 0; t0 < k_full.tokens; t0 += kRowBlock) {
    const int64_t n = std::min(kRowBlock, k_full.tokens - t0);
    key_block_scores(q, n_q, D, row_block(k_full, t0, n, D, rowbuf), n, scores + t0, S);
  }
}

#ifdef KVLAB_AVX2_LOOPS
// exp_nonpositive on 8 lanes: the same steps in the same order.
inline __m256 exp_nonpositive8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693145752f))),
                                 _mm256_mul_ps(n, _mm256_set1_ps(1.42860677e-6f)));
  __m256 p = _mm256_set1_ps(1.f / 720.f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
#endif

// Replaces each row of raw scores by exp(scale * (s - max)); inv_sum[h] = 1 / row sum.
inline void softmax_unnormalized(float* scores, int64_t n_q, int64_t S, float scale, float* inv_sum) {
#ifdef KVLAB_AVX2_LOOPS
  // Spelled out: the compilers leave the max loop scalar.
  for (int64_t h = 0; h < n_q; ++h) {
    float* sh = scores + h * S;
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int64_t t = 0;
    for (; t + 8 <= S; t += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(sh + t));
    float mx = avx2_loops::hmax(m8);
    for (; t < S; ++t) mx = std::max(mx, sh[t]);
    const __m256 vs = _mm256_set1_ps(scale), vm = _mm256_set1_ps(mx * scale);
    __m256 s8 = _mm256_setzero_ps();
    for (t = 0; t + 8 <= S; t += 8) {
      const __m256 e = exp_nonpositive8(_mm256_fmsub_ps(_mm256_loadu_ps(sh + t), vs, vm));
      _mm256_storeu_ps(sh + t, e);
      s8 = _mm256_add_ps(s8, e);
    }
    float sum = avx2_loops::hsum(s8);
    for (; t < S; ++t) sum += (sh[t] = exp_nonpositive(sh[t] * scale - mx * scale));
    inv_sum[h] = 1.f / sum;
  }
  return;
#endif
  for (int64_t h = 0; h < n_q; ++h) {
    float* sh = scores + h * S;
    float mxl[kLanes], suml[kLanes] = {};
    for (int j = 0; j < kLanes; ++j) mxl[j] = -INFINITY;
    int64_t t = 0;
    for (; t + kLanes <= S; t += kLanes)
      for (int j = 0; j < kLanes; ++j) mxl[j] = sh[t + j] > mxl[j] ? sh[t + j] : mxl[j];
    float mx = -INFINITY;
    for (; t < S; ++t) mx = std::max(mx, sh[t]);
    for (int j = 0; j < kLanes; ++j) mx = std::max(mx, mxl[j]);
    const float m = mx * scale;
    for (t = 0; t + kLanes <= S; t += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const float e = exp_nonpositive(sh[t + j] * scale - m);
        sh[t + j] = e;
        suml[j] += e;
      }
    float sum = 0.f;
    for (; t < S; ++t) sum += (sh[t] = exp_nonpositive(sh[t] * scale - m));
    for (int j = 0; j < kLanes; ++j) sum += suml[j];
    inv_sum[h] = 1.f / sum;
  }
}

// out[h] += sum_t p[h * S + t] v_t over n fp32 rows v of stride D (at most kRowBlock).
inline void value_block_sum(const float* p, int64_t n_q, int64_t D, const float* v, int64_t n, int64_t S,
                            float* out) {
#ifdef KVLAB_AVX2_LOOPS
  // The block (16 KB at D = 128, so it stays in L1) is read once from memory; within it, 64
  // channels of one head are summed in registers instead of a load and store of out per token.
  if (D % 64 == 0) {
    for (int64_t h = 0; h < n_q; ++h)
      for (int64_t d0 = 0; d0 < D; d0 += 64) {
        __m256 acc[8];
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_loadu_ps(out + h * D + d0 + 8 * k);
        for (int64_t t = 0; t < n; ++t) {
          const __m256 pt = _mm256_set1_ps(p[h * S + t]);
          const float* vr = v + t * D + d0;
          for (int k = 0; k < 8; ++k) acc[k] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vr + 8 * k), acc[k]);
        }
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps(out + h * D + d0 + 8 * k, acc[k]);
      }
    return;
  }
#endif
  for (int64_t t = 0; t < n; ++t) {
    const float* vr = v + t * D;
    for (int64_t h = 0; h < n_q; ++h) {
      const float pt = p[h * S + t];
      float* oh = out + h * D;
      for (int64_t d = 0; d < D; ++d) oh[d] += pt * vr[d];
    }
  }
}

// out[h] += sum_t p[h * S + t] v_full_t for every full-precision value row.
inline void full_value_sum(const float* p, int64_t n_q, int64_t D, const Rows& v_full, int64_t S, float* out,
                           float* rowbuf) {
  for (int64_t t0 = 0; t0 < v_full.tokens; t0 += kRowBlock) {
    const int64_t n = std::min(kRowBlock, v_full.tokens - t0);
    value_block_sum(p + t0, n_q, D, row_block(v_full, t0, n, D, rowbuf), n, S, out);
  }
}

}  // namespace kvlab::kernels::KVLAB_KERNEL_ISA

// ---- entry points (one definition per ISA translation unit) -----------------------------------
namespace kvlab::kernels::KVLAB_KERNEL_ISA {

#define KVLAB_BITS_SWITCH(bits, CALL)         \
  switch (bits) {                             \
    case 1: { constexpr int B = 1; CALL; } break; \
    case 2: { constexpr int B = 2; CALL; } break; \
    case 3: { constexpr int B = 3; CALL; } break; \
    case 4: { constexpr int B = 4; CALL; } break; \
    default: { constexpr int B = 8; CALL; } break; \
  }

#define KVLAB_QUANT_ENTRIES(P)                                                                                  \
  void quantize_per_token_entry(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q,           \
                                uint32_t* codes, P* scales, P* zeros) {                                          \
    KVLAB_BITS_SWITCH(q.bits, (quantize_per_token<B, P>(x, T, D, ld, q, codes, scales, zeros)))                 \
  }                                                                                                              \
  void quantize_per_channel_entry(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q,         \
                                  uint32_t* codes, P* scales, P* zeros) {                                        \
    KVLAB_BITS_SWITCH(q.bits, (quantize_per_channel<B, P>(x, T, D, ld, q, codes, scales, zeros)))               \
  }                                                                                                              \
  void dequantize_per_token_entry(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,  \
                                  const QuantShape& q, float* out, int64_t ld) {                                 \
    KVLAB_BITS_SWITCH(q.bits, (dequantize_per_token<B, P>(codes, scales, zeros, T, D, q, out, ld)))             \
  }                                                                                                              \
  void dequantize_per_channel_entry(const uint32_t* codes, const P* scales, const P* zeros, int64_t T,           \
                                    int64_t D, const QuantShape& q, float* out, int64_t ld) {                    \
    KVLAB_BITS_SWITCH(q.bits, (dequantize_per_channel<B, P>(codes, scales, zeros, T, D, q, out, ld)))           \
  }
KVLAB_QUANT_ENTRIES(float)
KVLAB_QUANT_ENTRIES(c10::Half)
#undef KVLAB_QUANT_ENTRIES

// Element i of a packed stream's exact channels, as a float.
inline float exact_value(const PackedStream& s, int64_t i) {
  switch (s.exact_type) {
    case RowType::F16: return static_cast<float>(static_cast<const c10::Half*>(s.exact)[i]);
    case RowType::BF16: return static_cast<float>(static_cast<const c10::BFloat16*>(s.exact)[i]);
    default: return static_cast<const float*>(s.exact)[i];
  }
}

void decode_attention_entry(const float* q, int64_t n_q, int64_t D, const PackedStream& k, const Rows& k_full,
                            const PackedStream& v, const Rows& v_full, float scale, float* out, float* workspace) {
  // Scratch: the loops', then n_q inverse row sums, then (with exact channels) the queries over
  // the packed key channels and the packed values' sums, n_q * D each, then a block of widened rows.
  thread_local std::vector<float> scratch;
  const int64_t loops = loop_scratch(n_q, D, k, v);
  const int64_t need = loops + n_q + 2 * n_q * D + kRowBlock * D;
  if (scratch.size() < static_cast<size_t>(need)) scratch.resize(static_cast<size_t>(need));
  float* inv_sum = scratch.data() + loops;
  float* q_packed = inv_sum + n_q;
  float* v_packed = q_packed + n_q * D;
  float* rowbuf = v_packed + n_q * D;
  const int64_t S = k.tokens + k_full.tokens;
  const int64_t kd = D - k.exact_dims, vd = D - v.exact_dims;  // channels in the codes
  float* scores = workspace;
  if (k.tokens > 0) {
    const float* qk = q;
    if (k.exact_dims > 0) {  // q . key = q[:kd] . packed + q[kd:] . exact
      for (int64_t h = 0; h < n_q; ++h) std::copy(q + h * D, q + h * D + kd, q_packed + h * kd);
      qk = q_packed;
    }
    KVLAB_BITS_SWITCH(k.shape.bits, (packed_key_scores<B>(qk, n_q, kd, k, scores, S, scratch.data())))
    for (int64_t h = 0; h < n_q && k.exact_dims > 0; ++h)
      for (int64_t t = 0; t < k.tokens; ++t) {
        float dot = 0.f;
        for (int64_t e = 0; e < k.exact_dims; ++e) dot += q[h * D + kd + e] * exact_value(k, t * k.exact_dims + e);
        scores[h * S + t] += dot;
      }
  }
  full_key_scores(q, n_q, D, k_full, scores + k.tokens, S, rowbuf);
  softmax_unnormalized(scores, n_q, S, scale, inv_sum);
  for (int64_t i = 0; i < n_q * D; ++i) out[i] = 0.f;
  if (v.tokens > 0) {
    if (v.exact_dims == 0) {
      KVLAB_BITS_SWITCH(v.shape.bits, (packed_value_sum<B>(scores, n_q, D, v, S, out, scratch.data())))
    } else {  // the packed channels into rows of vd, then out = [those ; sum_t p_t exact_t]
      std::fill(v_packed, v_packed + n_q * vd, 0.f);
      KVLAB_BITS_SWITCH(v.shape.bits, (packed_value_sum<B>(scores, n_q, vd, v, S, v_packed, scratch.data())))
      for (int64_t h = 0; h < n_q; ++h) {
        std::copy(v_packed + h * vd, v_packed + (h + 1) * vd, out + h * D);
        for (int64_t t = 0; t < v.tokens; ++t)
          for (int64_t e = 0; e < v.exact_dims; ++e)
            out[h * D + vd + e] += scores[h * S + t] * exact_value(v, t * v.exact_dims + e);
      }
    }
  }
  full_value_sum(scores + v.tokens, n_q, D, v_full, S, out, rowbuf);
  for (int64_t h = 0; h < n_q; ++h)
    for (int64_t d = 0; d < D; ++d) out[h * D + d] *= inv_sum[h];
}

#undef KVLAB_BITS_SWITCH
}  // namespace kvlab::kernels::KVLAB_KERNEL_ISA

#include "linear16_loops.h"
