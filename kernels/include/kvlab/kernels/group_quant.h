#pragma once
// Group quantization of one (batch, kv-head) stream of tokens, METHODS.md section 1.
//
// Asymmetric (default): per group mn = min, mx = max, s = (mx - mn) / (2^b - 1); the stored scale
// S and zero Z are s and mn rounded to the parameter type P (fp16 or fp32); codes are
// q = clamp(round((x - Z) / S), 0, 2^b - 1) computed with the stored S and Z, and x' = q * S + Z.
// If mx == mn, S = 0 and every q = 0 (x' = Z: exact when mn is representable in P). No division
// by zero, no NaN. Symmetric: S = max|x| / (2^(b-1) - 1), q = clamp(round(x / S), -(2^(b-1)-1),
// 2^(b-1)-1) stored as code q + 2^(b-1) - 1, x' = (code - (2^(b-1) - 1)) * S; no zeros are stored;
// b >= 2. round() is round-half-to-even (nearbyint).
//
// Layouts (T tokens, D channels, group G; words per token Wt = packed_words(D, b); words per
// channel-block Wc = packed_words(G, b)):
//   PerToken   groups of G consecutive channels inside one token (G divides D):
//              codes  [T, Wt] uint32 (a token's D codes packed in channel order)
//              scales [T, D / G] P, zeros [T, D / G] P
//   PerChannel groups of G consecutive tokens inside one channel (T a multiple of G), in blocks
//              n = 0 .. T/G - 1 of G tokens:
//              codes  [T / G, D, Wc] uint32 (channel d's G codes of block n packed in token order)
//              scales [T / G, D] P, zeros [T / G, D] P
// Inputs are fp32 rows of D values with row stride `ld` (>= D). NaN or Inf in the input is
// rejected with kvlab::Error (message says which token/channel), never propagated.
#include <c10/util/Half.h>

#include <cstdint>

namespace kvlab::kernels {

enum class Granularity { PerToken, PerChannel };

struct QuantShape {
  int bits = 2;
  int64_t group = 32;      // G (already resolved: -1 has been replaced by D or T by the caller)
  bool symmetric = false;
};

template <typename P>  // float or c10::Half
void quantize_per_token(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q,
                        uint32_t* codes, P* scales, P* zeros);
template <typename P>
void dequantize_per_token(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                          const QuantShape& q, float* out, int64_t ld);
template <typename P>
void quantize_per_channel(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q,
                          uint32_t* codes, P* scales, P* zeros);
template <typename P>
void dequantize_per_channel(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                            const QuantShape& q, float* out, int64_t ld);

namespace reference {
template <typename P>
void quantize_per_token(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q,
                        uint32_t* codes, P* scales, P* zeros);
template <typename P>
void dequantize_per_token(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                          const QuantShape& q, float* out, int64_t ld);
template <typename P>
void quantize_per_channel(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q,
                          uint32_t* codes, P* scales, P* zeros);
template <typename P>
void dequantize_per_channel(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                            const QuantShape& q, float* out, int64_t ld);
}  // namespace reference

}  // namespace kvlab::kernels
