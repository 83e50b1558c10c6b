// Plain group quantization (METHODS.md section 1): the definition the fast kernels are tested against.
#include <cmath>
#include <vector>

#include "kvlab/common/error.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packing.h"

namespace kvlab::kernels::reference {
namespace {

template <typename P>
float as_param(float v) {
  return static_cast<float>(static_cast<P>(v));
}

void check_shape(const QuantShape& q, int64_t n_in_group_dim, const char* what) {
  if (!valid_bits(q.bits)) fail("kernels: bit width {} is not one of 1, 2, 3, 4, 8", q.bits);
  if (q.symmetric && q.bits < 2) fail("kernels: symmetric quantization needs at least 2 bits, got {}", q.bits);
  if (q.group <= 0 || n_in_group_dim % q.group != 0)
    fail("kernels: group size {} does not divide the {} ({})", q.group, what, n_in_group_dim);
}

// Quantizes n values read with stride `stride` as one group; writes codes, returns (S, Z) as floats.
template <typename P>
void quantize_group(const float* x, int64_t n, int64_t stride, const QuantShape& q, uint8_t* codes, P* scale,
                    P* zero, int64_t token, int64_t channel, int64_t token_step, int64_t channel_step) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i * stride]))
      fail("kernels: non-finite value {} in K/V at token {}, channel {}", x[i * stride], token + i * token_step,
           channel + i * channel_step);
  }
  if (q.symmetric) {
    const int L = (1 << (q.bits - 1)) - 1;
    float amax = 0.f;
    for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i * stride]));
    const float S = as_param<P>(amax / static_cast<float>(L));
    if (!std::isfinite(S)) fail("kernels: scale {} overflows the parameter type at token {}, channel {}", amax / L, token, channel);
    for (int64_t i = 0; i < n; ++i) {
      float v = S == 0.f ? 0.f : std::nearbyint(x[i * stride] / S);
      v = std::min(std::max(v, static_cast<float>(-L)), static_cast<float>(L));
      codes[i] = static_cast<uint8_t>(static_cast<int>(v) + L);
    }
    *scale = static_cast<P>(S);
    return;
  }
  const int L = (1 << q.bits) - 1;
  float mn = x[0], mx = x[0];
  for (int64_t i = 1; i < n; ++i) {
    mn = std::min(mn, x[i * stride]);
    mx = std::max(mx, x[i * stride]);
  }
  const float S = as_param<P>((mx - mn) / static_cast<float>(L));
  const float Z = as_param<P>(mn);
  if (!std::isfinite(S) || !std::isfinite(Z))
    fail("kernels: group range [{}, {}] overflows the parameter type at token {}, channel {} (use fp32 parameters)",
         mn, mx, token, channel);
  for (int64_t i = 0; i < n; ++i) {
    float v = S == 0.f ? 0.f : std::nearbyint((x[i * stride] - Z) / S);
    v = std::min(std::max(v, 0.f), static_cast<float>(L));
    codes[i] = static_cast<uint8_t>(v);
  }
  *scale = static_cast<P>(S);
  *zero = static_cast<P>(Z);
}

float dequant(int code, float S, float Z, const QuantShape& q) {
  if (q.symmetric) return static_cast<float>(code - ((1 << (q.bits - 1)) - 1)) * S;
  return static_cast<float>(code) * S + Z;
}

}  // namespace

template <typename P>
void quantize_per_token(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                        P* scales, P* zeros) {
  check_shape(q, D, "channels");
  const int64_t Wt = packed_words(D, q.bits), ng = D / q.group;
  std::vector<uint8_t> c(D);
  P unused{};
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t g = 0; g < ng; ++g)
      quantize_group<P>(x + t * ld + g * q.group, q.group, 1, q, c.data() + g * q.group, scales + t * ng + g,
                        q.symmetric ? &unused : zeros + t * ng + g, t, g * q.group, 0, 1);
    pack_codes(c.data(), D, q.bits, codes + t * Wt);
  }
}

template <typename P>
void dequantize_per_token(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                          const QuantShape& q, float* out, int64_t ld) {
  check_shape(q, D, "channels");
  const int64_t Wt = packed_words(D, q.bits), ng = D / q.group;
  std::vector<uint8_t> c(D);
  for (int64_t t = 0; t < T; ++t) {
    unpack_codes(codes + t * Wt, D, q.bits, c.data());
    for (int64_t d = 0; d < D; ++d) {
      const int64_t g = d / q.group;
      const float S = static_cast<float>(scales[t * ng + g]);
      const float Z = q.symmetric ? 0.f : static_cast<float>(zeros[t * ng + g]);
      out[t * ld + d] = dequant(c[d], S, Z, q);
    }
  }
}

template <typename P>
void quantize_per_channel(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                          P* scales, P* zeros) {
  check_shape(q, T, "tokens");
  const int64_t G = q.group, Wc = packed_words(G, q.bits);
  std::vector<uint8_t> c(G);
  P unused{};
  for (int64_t n = 0; n < T / G; ++n) {
    for (int64_t d = 0; d < D; ++d) {
      quantize_group<P>(x + n * G * ld + d, G, ld, q, c.data(), scales + n * D + d,
                        q.symmetric ? &unused : zeros + n * D + d, n * G, d, 1, 0);
      pack_codes(c.data(), G, q.bits, codes + (n * D + d) * Wc);
    }
  }
}

template <typename P>
void dequantize_per_channel(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                            const QuantShape& q, float* out, int64_t ld) {
  check_shape(q, T, "tokens");
  const int64_t G = q.group, Wc = packed_words(G, q.bits);
  std::vector<uint8_t> c(G);
  for (int64_t n = 0; n < T / G; ++n) {
    for (int64_t d = 0; d < D; ++d) {
      unpack_codes(codes + (n * D + d) * Wc, G, q.bits, c.data());
      const float S = static_cast<float>(scales[n * D + d]);
      const float Z = q.symmetric ? 0.f : static_cast<float>(zeros[n * D + d]);
      for (int64_t j = 0; j < G; ++j) out[(n * G + j) * ld + d] = dequant(c[j], S, Z, q);
    }
  }
}

#define KVLAB_INSTANTIATE(P)                                                                                    \
  template void quantize_per_token<P>(const float*, int64_t, int64_t, int64_t, const QuantShape&, uint32_t*, P*, \
                                      P*);                                                                       \
  template void dequantize_per_token<P>(const uint32_t*, const P*, const P*, int64_t, int64_t, const QuantShape&, \
                                        float*, int64_t);                                                        \
  template void quantize_per_channel<P>(const float*, int64_t, int64_t, int64_t, const QuantShape&, uint32_t*,  \
                                        P*, P*);                                                                 \
  template void dequantize_per_channel<P>(const uint32_t*, const P*, const P*, int64_t, int64_t,                \
                                          const QuantShape&, float*, int64_t);
KVLAB_INSTANTIATE(float)
KVLAB_INSTANTIATE(c10::Half)
#undef KVLAB_INSTANTIATE

}  // namespace kvlab::kernels::reference
