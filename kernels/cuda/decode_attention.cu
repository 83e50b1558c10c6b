// Fused decode attention over [packed K ; full K] and [packed V ; full V] (kv_cuda.h).
//
// Grid (stream, split): each thread block takes one (batch, kv-head) stream and a contiguous range
// of tokens, for all n_q query heads of that kv-head at once (GQA: the kv-head's data is read once).
// It walks its range in chunks of C tokens with an online softmax in fp32 (log2 domain), and
// writes (max, sum, unnormalised output) per head; a second kernel merges the splits by
// log-sum-exp. With one split the block writes the output itself.
//
// Per chunk: (1) stage the chunk's codes and parameters in shared memory with wide loads,
// (2) scores, (3) softmax update, (4) values. Two layouts have fast paths (KIVI / KVmix: keys
// per-channel, values per-token, 2/3/4/8 bits); every other layout, the full-precision window and
// the chunk where packed meets full precision take the generic path (dequantize element by element).
// Fast paths, as the design anchors ask: scales folded out of the inner loop (keys:
// score = sum_d (q_d s_d) code_d + sum_d q_d z_d per block; values: sum_t (p_t s_t) code_t
// + sum_t p_t z_t per group), codes turned into floats by the magic-number trick (OR the code
// into the mantissa of 2^23, subtract 2^23; the code's bit position becomes an exact power-of-two
// factor taken out once at the end), no integer-to-float conversions.
// MixKVQ's exact key channels are read in the same kernel: channels dim .. dim + exact_dims - 1
// of a packed token come from the exact rows beside the codes.
#include <algorithm>
#include <cmath>

#include "device_common.cuh"

namespace kvlab_cuda {
namespace {

constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFull = 0xffffffffu;

struct PackedView {
  int per_channel, bits, group, symmetric, f16, dim, tokens;
  const uint32_t* codes;
  int64_t codes_stream;
  const void* scales;
  const void* zeros;
  int64_t param_stream;
  const void* exact;
  int exact_dtype, exact_dims;
  int64_t exact_row, exact_stream;
};

struct RowsView {
  const void* data;
  int dtype;
  int64_t row, stream;
};

struct DecodeArgs {
  const float* q;
  int64_t q_stream;
  int n_q, n_q_pad, D;
  PackedView k, v;
  RowsView kf, vf;
  float scale_log2;  // softmax_scale * log2(e)
  float* out;
  int64_t out_stream;
  float* ws;         // [streams, splits, n_q, D + 2]
  int S, C, chunks_per_split, splits;
  int k_fast, v_fast;  // the layout allows the fast path (per chunk: if the chunk is all packed)
  uint32_t magic;      // 0x4B000000, a parameter so the compiler cannot fold it into an immediate
  // Shared-memory offsets, in 4-byte words.
  int off_q, off_sc, off_ml, off_acc, off_kc, off_kp, off_vc, off_vp, off_red;
};

// ---- element access for the generic path -------------------------------------------------------
__device__ float dequant(const PackedView& s, int64_t bh, int t, int d) {
  const int cpw = codes_per_word(s.bits);
  const uint32_t mask = (1u << s.bits) - 1u;
  uint32_t word;
  int shift;
  int64_t pi;
  if (!s.per_channel) {
    const int Wt = words_for(s.dim, s.bits);
    word = s.codes[bh * s.codes_stream + static_cast<int64_t>(t) * Wt + d / cpw];
    shift = (d % cpw) * s.bits;
    pi = bh * s.param_stream + static_cast<int64_t>(t) * (s.dim / s.group) + d / s.group;
  } else {
    const int Wc = words_for(s.group, s.bits), n = t / s.group, j = t % s.group;
    word = s.codes[bh * s.codes_stream + (static_cast<int64_t>(n) * s.dim + d) * Wc + j / cpw];
    shift = (j % cpw) * s.bits;
    pi = bh * s.param_stream + static_cast<int64_t>(n) * s.dim + d;
  }
  const int code = static_cast<int>((word >> shift) & mask);
  const float S = load_param(s.scales, s.f16, pi);
  if (s.symmetric) return static_cast<float>(code - ((1 << (s.bits - 1)) - 1)) * S;
  return static_cast<float>(code) * S + load_param(s.zeros, s.f16, pi);
}

// Channel d of combined token t: packed (codes or exact channels) or full precision.
__device__ float element(const PackedView& s, const RowsView& f, int64_t bh, int t, int d) {
  if (t < s.tokens) {
    if (d < s.dim) return dequant(s, bh, t, d);
    return load_as_float(s.exact, s.exact_dtype, bh * s.exact_stream + t * s.exact_row + (d - s.dim));
  }
  return load_as_float(f.data, f.dtype, bh * f.stream + static_cast<int64_t>(t - s.tokens) * f.row + d);
}

// Copies `bytes` (a multiple of 2) from global to shared memory with the widest aligned accesses.
__device__ void stage(void* dst, const void* src, int bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | static_cast<uintptr_t>(bytes);
  const int tid = threadIdx.x, nt = blockDim.x;
  if ((a & 15u) == 0) {
    const int n = bytes / 16;
#pragma unroll 4
    for (int i = tid; i < n; i += nt) reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
  } else if ((a & 3u) == 0) {
    const int n = bytes / 4;
#pragma unroll 4
    for (int i = tid; i < n; i += nt) reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
  } else {
    const int n = bytes / 2;
    for (int i = tid; i < n; i += nt) reinterpret_cast<uint16_t*>(dst)[i] = reinterpret_cast<const uint16_t*>(src)[i];
  }
}

// Scales and effective zeros (z, or -L s when symmetric) of n groups as fp32 in shared memory.
__device__ void stage_params(float* s_out, float* z_out, const PackedView& s, int64_t first, int n) {
  const float L = static_cast<float>((1 << (s.bits - 1)) - 1);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float S = load_param(s.scales, s.f16, first + i);
    s_out[i] = S;
    z_out[i] = s.symmetric ? -L * S : load_param(s.zeros, s.f16, first + i);
  }
}

// Code j of a word as (code * 2^e) in fp32, exactly: OR it into the mantissa of 2^23 and subtract
// 2^23. Codes that would reach past bit 22 are taken from hi = word >> 16. After unrolling every
// shift and mask is a constant.
template <int B>
__device__ __forceinline__ int code_exponent(int j) {
  return j * B + B <= 23 ? j * B : j * B - 16;
}
template <int B>
__device__ __forceinline__ float code_scaled(uint32_t lo, uint32_t hi, int j, uint32_t magic) {
  constexpr uint32_t mask = (1u << B) - 1u;
  const bool low = j * B + B <= 23;
  const uint32_t src = low ? lo : hi;
  return __uint_as_float(magic | (src & (mask << code_exponent<B>(j)))) - 8388608.f;
}
__device__ __forceinline__ float pow2_neg(int e) { return __uint_as_float(static_cast<uint32_t>(127 - e) << 23); }

// ---- keys, per-channel packed (fast) -----------------------------------------------------------
// A column is one word position w of one block n: cpw tokens. 8 lanes share a column, each taking
// every 8th channel, with HB heads x cpw tokens of partial scores in registers; a transposing
// reduction over the 8 lanes leaves each lane K/8 of the sums.
template <int KP>
__device__ __forceinline__ void reduce_step(float (&v)[KP], int n, int offset, bool upper) {
#pragma unroll
  for (int i = 0; i < KP / 2; ++i) {
    if (i < n / 2) {
      const float send = upper ? v[i] : v[i + n / 2];
      const float keep = upper ? v[i + n / 2] : v[i];
      v[i] = keep + __shfl_xor_sync(kFull, send, offset);
    }
  }
}

template <int HB, int B>
__device__ void keys_fast(const DecodeArgs& a, float* sm, int hg) {
  constexpr int CPW = codes_per_word(B);
  constexpr int K = HB * CPW;
  constexpr int KP = (K + 7) / 8 * 8;
  const PackedView& k = a.k;
  const int G = k.group, Dq = k.dim, Wc = words_for(G, B);
  const int ncols = (a.C / G) * Wc;
  const uint32_t* kc = reinterpret_cast<const uint32_t*>(sm + a.off_kc);
  const float* ks = sm + a.off_kp;
  const float* kz = ks + (a.C / G) * Dq;
  const float* q = sm + a.off_q;
  float* sc = sm + a.off_sc;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, p = lane & 7;
  const int per_round = 4 * (blockDim.x >> 5);
  const uint32_t magic = a.magic;  // 2^23 in a register: (word & mask) | magic is one LOP3
  for (int base = 0; base < ncols; base += per_round) {  // uniform bounds: every lane joins the shuffles
    const int col = base + warp * 4 + (lane >> 3);
    const bool active = col < ncols;
    const int n = active ? col / Wc : 0, w = active ? col % Wc : 0;
    float v[KP];
#pragma unroll
    for (int i = 0; i < KP; ++i) v[i] = 0.f;
    float zq[HB];
#pragma unroll
    for (int h = 0; h < HB; ++h) zq[h] = 0.f;
    if (active) {
      for (int d = p; d < Dq; d += 8) {
        const uint32_t lo = kc[(n * Dq + d) * Wc + w], hi = lo >> 16;
        const float s = ks[n * Dq + d], z = kz[n * Dq + d];
        float qs[HB];
#pragma unroll
        for (int h = 0; h < HB; ++h) {
          const float qd = q[(hg + h) * a.D + d];
          qs[h] = qd * s;
          zq[h] = fmaf(qd, z, zq[h]);
        }
#pragma unroll
        for (int j = 0; j < CPW; ++j) {
          const float c = code_scaled<B>(lo, hi, j, magic);
#pragma unroll
          for (int h = 0; h < HB; ++h) v[h * CPW + j] = fmaf(qs[h], c, v[h * CPW + j]);
        }
      }
    }
    reduce_step<KP>(v, KP, 4, p & 4);
    reduce_step<KP>(v, KP / 2, 2, p & 2);
    reduce_step<KP>(v, KP / 4, 1, p & 1);
#pragma unroll
    for (int h = 0; h < HB; ++h) {
      zq[h] += __shfl_xor_sync(kFull, zq[h], 4);
      zq[h] += __shfl_xor_sync(kFull, zq[h], 2);
      zq[h] += __shfl_xor_sync(kFull, zq[h], 1);
    }
    if (!active) continue;
#pragma unroll
    for (int i = 0; i < KP / 8; ++i) {
      const int idx = p * (KP / 8) + i;
      const int h = idx / CPW, j = idx % CPW;
      if (idx < K && w * CPW + j < G && hg + h < a.n_q) {
        float z = 0.f;
#pragma unroll
        for (int hh = 0; hh < HB; ++hh) z = hh == h ? zq[hh] : z;
        sc[(hg + h) * a.C + n * G + w * CPW + j] = (v[i] * pow2_neg(code_exponent<B>(j)) + z) * a.scale_log2;
      }
    }
  }
}

// Exact channels of packed keys (MixKVQ), added to the fast path's scores.
__device__ void keys_exact(const DecodeArgs& a, float* sm, int64_t bh, int t0) {
  const PackedView& k = a.k;
  const float* q = sm + a.off_q;
  float* sc = sm + a.off_sc;
  for (int i = threadIdx.x; i < a.n_q * a.C; i += blockDim.x) {
    const int h = i / a.C, t = i % a.C;
    float acc = 0.f;
    for (int e = 0; e < k.exact_dims; ++e)
      acc = fmaf(q[h * a.D + k.dim + e],
                 load_as_float(k.exact, k.exact_dtype, bh * k.exact_stream + (t0 + t) * k.exact_row + e), acc);
    sc[i] += acc * a.scale_log2;
  }
}

// ---- keys, generic: one thread per token ------------------------------------------------------
template <int HB>
__device__ void keys_generic(const DecodeArgs& a, float* sm, int64_t bh, int t0, int cn) {
  const float* q = sm + a.off_q;
  float* sc = sm + a.off_sc;
  for (int t = threadIdx.x; t < a.C; t += blockDim.x) {
    for (int hg = 0; hg < a.n_q_pad; hg += HB) {
      float acc[HB];
#pragma unroll
      for (int h = 0; h < HB; ++h) acc[h] = 0.f;
      if (t < cn) {
        for (int d = 0; d < a.D; ++d) {
          const float kd = element(a.k, a.kf, bh, t0 + t, d);
#pragma unroll
          for (int h = 0; h < HB; ++h) acc[h] = fmaf(q[(hg + h) * a.D + d], kd, acc[h]);
        }
      }
#pragma unroll
      for (int h = 0; h < HB; ++h)
        if (hg + h < a.n_q) sc[(hg + h) * a.C + t] = t < cn ? acc[h] * a.scale_log2 : -INFINITY;
    }
  }
}

// ---- values, per-token packed (fast) ----------------------------------------------------------
// Thread (slice, word w): accumulates HB heads x cpw channels over every slices-th token of the
// chunk; slices are then summed in a fixed order (deterministic) into the block's accumulator.
template <int HB, int B>
__device__ void values_fast(const DecodeArgs& a, float* sm, int hg) {
  constexpr int CPW = codes_per_word(B);
  const PackedView& v = a.v;
  const int Dq = v.dim, G = v.group, ng = Dq / G, Wt = words_for(Dq, B), Dw = Wt * CPW;
  const int slices = blockDim.x / Wt;
  const int slice = threadIdx.x / Wt, w = threadIdx.x % Wt;
  const uint32_t* vc = reinterpret_cast<const uint32_t*>(sm + a.off_vc);
  const float* vs = sm + a.off_vp;
  const float* vz = vs + a.C * ng;
  const float* pr = sm + a.off_sc;
  float* red = sm + a.off_red;  // [slices, HB, Dw]
  float* acc = sm + a.off_acc;
  const uint32_t magic = a.magic;  // 2^23 in a register: (word & mask) | magic is one LOP3
  if (slice < slices) {
    float o[HB * CPW];
#pragma unroll
    for (int i = 0; i < HB * CPW; ++i) o[i] = 0.f;
    float pz[HB];
#pragma unroll
    for (int h = 0; h < HB; ++h) pz[h] = 0.f;
    const int g = (w * CPW) / G;  // a word lies inside one group (G % cpw == 0)
    for (int t = slice; t < a.C; t += slices) {
      const uint32_t lo = vc[t * Wt + w], hi = lo >> 16;
      const float s = vs[t * ng + g], z = vz[t * ng + g];
      float ps[HB];
#pragma unroll
      for (int h = 0; h < HB; ++h) {
        const float ph = pr[(hg + h) * a.C + t];
        ps[h] = ph * s;
        pz[h] = fmaf(ph, z, pz[h]);
      }
#pragma unroll
      for (int j = 0; j < CPW; ++j) {
        const float c = code_scaled<B>(lo, hi, j, magic);
#pragma unroll
        for (int h = 0; h < HB; ++h) o[h * CPW + j] = fmaf(ps[h], c, o[h * CPW + j]);
      }
    }
#pragma unroll
    for (int h = 0; h < HB; ++h)
#pragma unroll
      for (int j = 0; j < CPW; ++j)
        red[(slice * HB + h) * Dw + w * CPW + j] = o[h * CPW + j] * pow2_neg(code_exponent<B>(j)) + pz[h];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < HB * Dq; i += blockDim.x) {
    const int h = i / Dq, d = i % Dq;
    if (hg + h >= a.n_q) continue;
    float s = 0.f;
    for (int sl = 0; sl < slices; ++sl) s += red[(sl * HB + h) * Dw + d];
    acc[(hg + h) * a.D + d] += s;
  }
  __syncthreads();
}

// Exact channels of packed values, next to the fast path.
__device__ void values_exact(const DecodeArgs& a, float* sm, int64_t bh, int t0) {
  const PackedView& v = a.v;
  const float* pr = sm + a.off_sc;
  float* acc = sm + a.off_acc;
  for (int i = threadIdx.x; i < a.n_q * v.exact_dims; i += blockDim.x) {
    const int h = i / v.exact_dims, e = i % v.exact_dims;
    float s = 0.f;
    for (int t = 0; t < a.C; ++t)
      s = fmaf(pr[h * a.C + t], load_as_float(v.exact, v.exact_dtype, bh * v.exact_stream + (t0 + t) * v.exact_row + e), s);
    acc[h * a.D + v.dim + e] += s;
  }
}

// ---- values, generic: one thread per channel --------------------------------------------------
__device__ void values_generic(const DecodeArgs& a, float* sm, int64_t bh, int t0, int cn) {
  const float* pr = sm + a.off_sc;
  float* acc = sm + a.off_acc;
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    for (int t = 0; t < cn; ++t) {
      const float vd = element(a.v, a.vf, bh, t0 + t, d);
      for (int h = 0; h < a.n_q; ++h) acc[h * a.D + d] = fmaf(pr[h * a.C + t], vd, acc[h * a.D + d]);
    }
  }
}

template <int HB>
__global__ void __launch_bounds__(kThreads, 4) decode_kernel(DecodeArgs a) {
  KVLAB_DYNAMIC_SMEM(float, sm);
  const int64_t bh = blockIdx.x;
  const int split = blockIdx.y;
  const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5, nw = nt >> 5;
  float* q = sm + a.off_q;       // [n_q_pad, D]
  float* sc = sm + a.off_sc;     // [n_q_pad, C] scores (log2 domain), then probabilities
  float* m_s = sm + a.off_ml;    // [n_q_pad] running max; then l_s, alpha_s
  float* l_s = m_s + a.n_q_pad;
  float* al_s = l_s + a.n_q_pad;
  float* acc = sm + a.off_acc;   // [n_q, D] unnormalised output
  for (int i = tid; i < a.n_q_pad * a.D; i += nt)
    q[i] = i < a.n_q * a.D ? a.q[bh * a.q_stream + i] : 0.f;
  for (int i = tid; i < a.n_q_pad; i += nt) m_s[i] = -INFINITY, l_s[i] = 0.f;
  for (int i = tid; i < a.n_q * a.D; i += nt) acc[i] = 0.f;
  for (int i = a.n_q * a.C + tid; i < a.n_q_pad * a.C; i += nt) sc[i] = 0.f;  // padding heads: p = 0
  __syncthreads();

  const int t_begin = split * a.chunks_per_split * a.C;
  const int t_end = imin(a.S, t_begin + a.chunks_per_split * a.C);
  for (int t0 = t_begin; t0 < t_end; t0 += a.C) {
    const int cn = imin(a.C, a.S - t0);
    const bool kfast = a.k_fast && t0 + a.C <= a.k.tokens;
    const bool vfast = a.v_fast && t0 + a.C <= a.v.tokens;
    if (kfast) {
      const PackedView& k = a.k;
      const int blocks = a.C / k.group, Wc = words_for(k.group, k.bits);
      const int64_t first = static_cast<int64_t>(t0 / k.group) * k.dim;
      stage(sm + a.off_kc, k.codes + bh * k.codes_stream + first * Wc, blocks * k.dim * Wc * 4);
      stage_params(sm + a.off_kp, sm + a.off_kp + blocks * k.dim, k, bh * k.param_stream + first, blocks * k.dim);
    }
    if (vfast) {
      const PackedView& v = a.v;
      const int Wt = words_for(v.dim, v.bits), ng = v.dim / v.group;
      stage(sm + a.off_vc, v.codes + bh * v.codes_stream + static_cast<int64_t>(t0) * Wt, a.C * Wt * 4);
      stage_params(sm + a.off_vp, sm + a.off_vp + a.C * ng, v, bh * v.param_stream + static_cast<int64_t>(t0) * ng,
                   a.C * ng);
    }
    __syncthreads();

    // (2) scores
    if (kfast) {
      for (int hg = 0; hg < a.n_q_pad; hg += HB) {
        switch (a.k.bits) {
          case 2: keys_fast<HB, 2>(a, sm, hg); break;
          case 3: keys_fast<HB, 3>(a, sm, hg); break;
          case 4: keys_fast<HB, 4>(a, sm, hg); break;
          default: keys_fast<HB, 8>(a, sm, hg); break;
        }
      }
      if (a.k.exact_dims > 0) {
        __syncthreads();
        keys_exact(a, sm, bh, t0);
      }
    } else {
      keys_generic<HB>(a, sm, bh, t0, cn);
    }
    __syncthreads();

    // (3) online softmax, a warp per head
    for (int h = warp; h < a.n_q; h += nw) {
      float mx = -INFINITY;
      for (int t = lane; t < cn; t += 32) mx = fmaxf(mx, sc[h * a.C + t]);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, o));
      const float m_old = m_s[h], m_new = fmaxf(m_old, mx);
      float sum = 0.f;
      for (int t = lane; t < a.C; t += 32) {
        const float p = t < cn ? exp2f(sc[h * a.C + t] - m_new) : 0.f;
        sc[h * a.C + t] = p;
        sum += p;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(kFull, sum, o);
      __syncwarp();
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_new);  // 0 on the first chunk (m_old = -inf)
        al_s[h] = alpha;
        l_s[h] = l_s[h] * alpha + sum;
        m_s[h] = m_new;
      }
    }
    __syncthreads();
    for (int i = tid; i < a.n_q * a.D; i += nt) acc[i] *= al_s[i / a.D];
    __syncthreads();

    // (4) values
    if (vfast) {
      for (int hg = 0; hg < a.n_q_pad; hg += HB) {
        switch (a.v.bits) {
          case 2: values_fast<HB, 2>(a, sm, hg); break;
          case 3: values_fast<HB, 3>(a, sm, hg); break;
          case 4: values_fast<HB, 4>(a, sm, hg); break;
          default: values_fast<HB, 8>(a, sm, hg); break;
        }
      }
      if (a.v.exact_dims > 0) values_exact(a, sm, bh, t0);
    } else {
      values_generic(a, sm, bh, t0, cn);
    }
    __syncthreads();
  }

  if (a.splits == 1) {
    for (int i = tid; i < a.n_q * a.D; i += nt) a.out[bh * a.out_stream + i] = acc[i] / l_s[i / a.D];
    return;
  }
  float* part = a.ws + (bh * a.splits + split) * a.n_q * (a.D + 2);
  for (int i = tid; i < a.n_q * a.D; i += nt) part[(i / a.D) * (a.D + 2) + i % a.D] = acc[i];
  for (int h = tid; h < a.n_q; h += nt) part[h * (a.D + 2) + a.D] = m_s[h], part[h * (a.D + 2) + a.D + 1] = l_s[h];
}

// Log-sum-exp merge of the splits' partial results.
__global__ void __launch_bounds__(kThreads) merge_kernel(DecodeArgs a) {
  const int64_t bh = blockIdx.x;
  const float* part = a.ws + bh * a.splits * a.n_q * (a.D + 2);
  const int stride = a.n_q * (a.D + 2);
  for (int i = threadIdx.x; i < a.n_q * a.D; i += blockDim.x) {
    const int h = i / a.D, d = i % a.D;
    float M = -INFINITY;
    for (int s = 0; s < a.splits; ++s) M = fmaxf(M, part[s * stride + h * (a.D + 2) + a.D]);
    float L = 0.f, o = 0.f;
    for (int s = 0; s < a.splits; ++s) {
      const float* ph = part + s * stride + h * (a.D + 2);
      const float f = exp2f(ph[a.D] - M);
      L = fmaf(ph[a.D + 1], f, L);
      o = fmaf(ph[d], f, o);
    }
    a.out[bh * a.out_stream + i] = o / L;
  }
}

// ---- host side ---------------------------------------------------------------------------------
int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }
int round16(int words) { return (words + 3) / 4 * 4; }  // 4-byte words -> 16-byte aligned

bool fast_bits(int b) { return b == 2 || b == 3 || b == 4 || b == 8; }

PackedView view_of(const kvlab_cuda_packed& p) {
  return {p.granularity == KVLAB_CUDA_PER_CHANNEL, p.bits, p.group, p.symmetric, p.param_dtype == KVLAB_CUDA_F16,
          p.dim, static_cast<int>(p.tokens), p.codes, p.codes_stream_stride, p.scales, p.zeros,
          p.param_stream_stride, p.exact, p.exact_dtype, p.exact_dims, p.exact_row_stride, p.exact_stream_stride};
}

int multiprocessors() {
  static int cached[64] = {0};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 132;
  if (cached[dev] == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 132;
    cached[dev] = n;
  }
  return cached[dev];
}

cudaError_t check_packed(const kvlab_cuda_packed& p, int D, const char* what) {
  if (p.tokens < 0) return invalid("decode attention: %s: %lld packed tokens", what, (long long)p.tokens);
  if (p.exact_dims < 0 || p.dim + p.exact_dims != D)
    return invalid("decode attention: %s: %d coded + %d exact channels for head_dim %d", what, p.dim, p.exact_dims, D);
  if (p.tokens == 0) return cudaSuccess;
  if (!valid_bits(p.bits)) return invalid("decode attention: %s: bit width %d", what, p.bits);
  if (p.group <= 0) return invalid("decode attention: %s: group %d", what, p.group);
  if (p.granularity == KVLAB_CUDA_PER_TOKEN && p.dim % p.group != 0)
    return invalid("decode attention: %s: group %d does not divide %d channels", what, p.group, p.dim);
  if (p.granularity == KVLAB_CUDA_PER_CHANNEL && p.tokens % p.group != 0)
    return invalid("decode attention: %s: %lld packed tokens is not a multiple of the group %d", what,
                   (long long)p.tokens, p.group);
  if (p.param_dtype != KVLAB_CUDA_F16 && p.param_dtype != KVLAB_CUDA_F32)
    return invalid("decode attention: %s: parameter dtype %d", what, p.param_dtype);
  if (!p.codes || !p.scales || (!p.symmetric && !p.zeros) || (p.exact_dims > 0 && !p.exact))
    return invalid("decode attention: %s: null codes, scales, zeros or exact rows", what);
  return cudaSuccess;
}

// Everything about a launch that the workspace size and the launch share.
struct Plan {
  DecodeArgs a;
  int HB;
  size_t smem;
};

cudaError_t make_plan(const kvlab_cuda_decode_args* in, Plan& plan) {
  if (!in) return invalid("decode attention: null arguments");
  const int D = in->dim;
  if (D <= 0 || in->n_q <= 0 || in->streams < 0)
    return invalid("decode attention: head_dim %d, %d query heads, %lld streams", D, in->n_q, (long long)in->streams);
  if (cudaError_t e = check_packed(in->k, D, "keys")) return e;
  if (cudaError_t e = check_packed(in->v, D, "values")) return e;
  const int64_t S = in->k.tokens + in->k_full.tokens;
  if (in->v.tokens + in->v_full.tokens != S)
    return invalid("decode attention: %lld keys but %lld values", (long long)S,
                   (long long)(in->v.tokens + in->v_full.tokens));
  if (S <= 0) return invalid("decode attention: no tokens");
  if (S > (1LL << 30)) return invalid("decode attention: %lld tokens", (long long)S);
  if ((in->k_full.tokens > 0 && !in->k_full.data) || (in->v_full.tokens > 0 && !in->v_full.data))
    return invalid("decode attention: null full-precision rows");
  if (!in->q || !in->out) return invalid("decode attention: null q or out");
  if (in->streams > 2147483647LL) return invalid("decode attention: too many streams");

  DecodeArgs& a = plan.a;
  a = DecodeArgs{};
  a.q = in->q, a.q_stream = in->q_stream_stride, a.n_q = in->n_q, a.D = D;
  a.k = view_of(in->k), a.v = view_of(in->v);
  a.kf = {in->k_full.data, in->k_full.dtype, in->k_full.row_stride, in->k_full.stream_stride};
  a.vf = {in->v_full.data, in->v_full.dtype, in->v_full.row_stride, in->v_full.stream_stride};
  a.scale_log2 = in->softmax_scale * kLog2e;
  a.magic = 0x4B000000u;
  a.out = in->out, a.out_stream = in->out_stream_stride;
  a.S = static_cast<int>(S);
  plan.HB = in->n_q == 1 ? 1 : 4;
  a.n_q_pad = (in->n_q + plan.HB - 1) / plan.HB * plan.HB;

  // Chunk: whole per-channel blocks of keys and values, about 256 tokens (128 for 8-bit codes or
  // head_dim > 128, to bound shared memory).
  const int gk = a.k.per_channel && a.k.tokens > 0 ? a.k.group : 1;
  const int gv = a.v.per_channel && a.v.tokens > 0 ? a.v.group : 1;
  const int unit = gk / gcd(gk, gv) * gv;
  const int target = (a.k.bits == 8 || a.v.bits == 8 || D > 128) ? 128 : 256;
  a.C = std::max(1, target / unit) * unit;
  if (a.C > 4096) return invalid("decode attention: groups %d and %d make a %d-token chunk", gk, gv, a.C);

  a.k_fast = a.k.per_channel && a.k.tokens >= a.C && fast_bits(a.k.bits);
  const int vcpw = valid_bits(a.v.bits) ? codes_per_word(a.v.bits) : 1;
  const int vWt = valid_bits(a.v.bits) ? words_for(a.v.dim, a.v.bits) : 0;
  a.v_fast = !a.v.per_channel && a.v.tokens >= a.C && fast_bits(a.v.bits) && a.v.group % vcpw == 0 &&
             vWt <= kThreads;

  // Shared memory, in 4-byte words, each region 16-byte aligned.
  int off = 0;
  a.off_q = off, off += round16(a.n_q_pad * D);
  a.off_sc = off, off += round16(a.n_q_pad * a.C);
  a.off_ml = off, off += round16(3 * a.n_q_pad);
  a.off_acc = off, off += round16(a.n_q * D);
  if (a.k_fast) {
    const int blocks = a.C / a.k.group;
    a.off_kc = off, off += round16(blocks * a.k.dim * words_for(a.k.group, a.k.bits));
    a.off_kp = off, off += round16(2 * blocks * a.k.dim);
  }
  if (a.v_fast) {
    a.off_vc = off, off += round16(a.C * vWt);
    a.off_vp = off, off += round16(2 * a.C * (a.v.dim / a.v.group));
    a.off_red = off, off += round16((kThreads / vWt) * plan.HB * vWt * vcpw);
  }
  plan.smem = static_cast<size_t>(off) * 4;
  if (plan.smem > 227 * 1024)
    return invalid("decode attention: needs %zu bytes of shared memory (n_q %d, head_dim %d)", plan.smem, a.n_q, D);

  const int chunks = (a.S + a.C - 1) / a.C;
  int splits = in->splits;
  if (splits <= 0) {
    const int64_t want = 4LL * multiprocessors();
    splits = static_cast<int>(std::min<int64_t>(chunks, std::max<int64_t>(1, (want + in->streams - 1) / std::max<int64_t>(1, in->streams))));
  }
  splits = std::min(std::max(splits, 1), chunks);
  a.chunks_per_split = (chunks + splits - 1) / splits;
  a.splits = (chunks + a.chunks_per_split - 1) / a.chunks_per_split;
  if (a.splits > 65535) return invalid("decode attention: %d splits", a.splits);
  return cudaSuccess;
}

size_t workspace_of(const Plan& p, int64_t streams) {
  return p.a.splits <= 1 ? 0 : static_cast<size_t>(streams) * p.a.splits * p.a.n_q * (p.a.D + 2) * sizeof(float);
}

template <int HB>
cudaError_t launch(const Plan& p, int64_t streams, cudaStream_t stream) {
  if (p.smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(decode_kernel<HB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(p.smem));
    if (e != cudaSuccess) return e;
  }
  KVLAB_LAUNCH(decode_kernel<HB>, dim3(static_cast<unsigned>(streams), static_cast<unsigned>(p.a.splits)),
               dim3(kThreads), p.smem, stream)(p.a);
  if (p.a.splits > 1) KVLAB_LAUNCH(merge_kernel, dim3(static_cast<unsigned>(streams)), dim3(kThreads), 0, stream)(p.a);
  return cudaGetLastError();
}

}  // namespace
}  // namespace kvlab_cuda

using namespace kvlab_cuda;

extern "C" size_t kvlab_cuda_decode_workspace_bytes(const kvlab_cuda_decode_args* a) {
  Plan p;
  if (make_plan(a, p) != cudaSuccess) return 0;
  return workspace_of(p, a->streams);
}

extern "C" cudaError_t kvlab_cuda_decode_attention(const kvlab_cuda_decode_args* in, cudaStream_t stream) {
  clear_detail();
  Plan p;
  if (cudaError_t e = make_plan(in, p)) return e;
  if (in->streams == 0) return cudaSuccess;
  const size_t need = workspace_of(p, in->streams);
  if (need > 0 && (!in->workspace || in->workspace_bytes < need))
    return invalid("decode attention: workspace of %zu bytes, %zu needed", in->workspace_bytes, need);
  p.a.ws = static_cast<float*>(in->workspace);
  return p.HB == 1 ? launch<1>(p, in->streams, stream) : launch<4>(p, in->streams, stream);
}
