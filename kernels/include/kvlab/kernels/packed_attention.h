#pragma once
// Decode attention that reads packed K/V directly: one new query per query head, against
//   keys   [K' (k.tokens packed) ; K_full (tk_full rows)]
//   values [V' (v.tokens packed) ; V_full (tv_full rows)]
// with k.tokens + tk_full == v.tokens + tv_full == S (keys and values may be quantized up to
// different points, as in KIVI). scores = q . key * softmax_scale, softmax over all S in fp32,
// out = sum_t p_t value_t. No dequantized copy of the cache is built: per-channel keys use
// q . (code * s + z) = sum_d (q_d s_d) code_d + q . z per block, per-token values accumulate
// p_t s_tg code + p_t z_tg, and so on for the other two layouts. The full-precision rows are read
// in the type they are stored in (fp32, fp16 or bf16; widened in registers, accumulated in fp32),
// so a 16-bit cache is never copied to fp32. full_decode_attention is the same kernel over a cache
// with no packed part: the decode path of the full-precision cache.
#include <c10/util/Half.h>

#include <cstdint>

#include "kvlab/kernels/group_quant.h"

namespace kvlab::kernels {

enum class ParamType { F16, F32 };

// Element type of full-precision K/V rows.
enum class RowType { F32, F16, BF16 };

// `tokens` full-precision rows of D values, row stride D: [tokens, D] of `type`.
struct Rows {
  const void* data = nullptr;
  RowType type = RowType::F32;
  int64_t tokens = 0;
  Rows() = default;
  Rows(const void* d, RowType t, int64_t n) : data(d), type(t), tokens(n) {}
  Rows(const float* d, int64_t n) : data(d), type(RowType::F32), tokens(n) {}
};

// The packed tokens of one (batch, kv-head) stream, in the layouts of group_quant.h.
struct PackedStream {
  Granularity granularity = Granularity::PerToken;
  QuantShape shape;
  ParamType param = ParamType::F16;
  int64_t tokens = 0;                // packed tokens (a multiple of group for PerChannel)
  const uint32_t* codes = nullptr;
  const void* scales = nullptr;      // P* per `param`
  const void* zeros = nullptr;       // P*; nullptr when symmetric
  // Exact (high-precision) channels, as MixKVQ keeps them: when exact_dims > 0, the codes hold the
  // first D - exact_dims channels of each packed token and exact [tokens, exact_dims] (of
  // exact_type: the model's dtype) the last ones. The caller orders the channels of q, the
  // full-precision rows and out that way.
  const void* exact = nullptr;
  RowType exact_type = RowType::F32;
  int64_t exact_dims = 0;
};

// One (batch, kv-head): q [n_q, D] are the n_q query heads that share this kv-head (GQA).
// k_full [tk_full, D] and v_full [tv_full, D] have row stride D. out [n_q, D].
// workspace must hold at least n_q * S floats.
void packed_decode_attention(const float* q, int64_t n_q, int64_t D, const PackedStream& k,
                             const Rows& k_full, const PackedStream& v, const Rows& v_full,
                             float softmax_scale, float* out, float* workspace);
inline void packed_decode_attention(const float* q, int64_t n_q, int64_t D, const PackedStream& k,
                                    const float* k_full, int64_t tk_full, const PackedStream& v,
                                    const float* v_full, int64_t tv_full, float softmax_scale, float* out,
                                    float* workspace) {
  packed_decode_attention(q, n_q, D, k, Rows(k_full, tk_full), v, Rows(v_full, tv_full), softmax_scale, out,
                          workspace);
}

// Decode attention over S = k.tokens = v.tokens full-precision rows (no packed part).
// workspace must hold at least n_q * S floats.
void full_decode_attention(const float* q, int64_t n_q, int64_t D, const Rows& k, const Rows& v,
                           float softmax_scale, float* out, float* workspace);

namespace reference {
// Dequantizes K' and V' into full matrices and runs plain attention in double (the definition).
void packed_decode_attention(const float* q, int64_t n_q, int64_t D, const PackedStream& k,
                             const Rows& k_full, const PackedStream& v, const Rows& v_full,
                             float softmax_scale, float* out);
inline void packed_decode_attention(const float* q, int64_t n_q, int64_t D, const PackedStream& k,
                                    const float* k_full, int64_t tk_full, const PackedStream& v,
                                    const float* v_full, int64_t tv_full, float softmax_scale, float* out) {
  packed_decode_attention(q, n_q, D, k, Rows(k_full, tk_full), v, Rows(v_full, tv_full), softmax_scale, out);
}
// Textbook attention over full-precision rows, in double.
void full_decode_attention(const float* q, int64_t n_q, int64_t D, const Rows& k, const Rows& v,
                           float softmax_scale, float* out);
}  // namespace reference

}  // namespace kvlab::kernels
