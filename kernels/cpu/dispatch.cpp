// Public CPU kernels: argument checks, then the AVX-512, AVX2 or generic build of the loops.
#include <cstdlib>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "kernel_entries.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/linear16.h"
#include "kvlab/kernels/packing.h"

namespace kvlab::kernels {

#if defined(__x86_64__) || defined(__i386__)
// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
static bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}
#endif

bool cpu_runs(KernelIsa isa) {
#if defined(__x86_64__) || defined(__i386__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  switch (isa) {
    case KernelIsa::Generic: return true;
    case KernelIsa::Avx2: return avx2;
    case KernelIsa::Avx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return isa == KernelIsa::Generic;
#endif
}

KernelIsa active_isa() {
  static const KernelIsa isa = [] {
    const char* force = std::getenv("KVLAB_KERNELS");
    if (!force || !*force) return cpu_runs(KernelIsa::Avx512) ? KernelIsa::Avx512
                                  : cpu_runs(KernelIsa::Avx2) ? KernelIsa::Avx2
                                                              : KernelIsa::Generic;
    const KernelIsa want = std::strcmp(force, "generic") == 0 ? KernelIsa::Generic
                           : std::strcmp(force, "avx2") == 0  ? KernelIsa::Avx2
                           : std::strcmp(force, "avx512") == 0
                               ? KernelIsa::Avx512
                               : (fail("KVLAB_KERNELS={}: not one of generic, avx2, avx512", force), KernelIsa::Generic);
    if (!cpu_runs(want)) fail("KVLAB_KERNELS={}: this CPU does not have the instructions for it", force);
    return want;
  }();
  return isa;
}

const char* kernel_isa() {
  switch (active_isa()) {
    case KernelIsa::Avx512: return "avx512";
    case KernelIsa::Avx2: return "avx2";
    default: return "generic";
  }
}

// Calls the entry point NAME of the build that runs here.
#define KVLAB_DISPATCH(NAME, ...)                                        \
  switch (active_isa()) {                                               \
    case KernelIsa::Avx512: avx512::NAME(__VA_ARGS__); break;           \
    case KernelIsa::Avx2: avx2::NAME(__VA_ARGS__); break;               \
    default: generic::NAME(__VA_ARGS__); break;                         \
  }

namespace {

void check_quant(const QuantShape& q, int64_t T, int64_t D, int64_t ld, bool per_token) {
  if (!valid_bits(q.bits)) fail("kernels: bit width {} is not one of 1, 2, 3, 4, 8", q.bits);
  if (q.symmetric && q.bits < 2) fail("kernels: symmetric quantization needs at least 2 bits, got {}", q.bits);
  if (T < 0 || D <= 0 || ld < D) fail("kernels: bad shape T={} D={} ld={}", T, D, ld);
  const int64_t along = per_token ? D : T;
  if (q.group <= 0 || along % q.group != 0)
    fail("kernels: group size {} does not divide the {} ({})", q.group, per_token ? "channels" : "tokens", along);
}

void check_stream(const PackedStream& s, int64_t D, const char* which) {
  if (s.exact_dims < 0 || s.exact_dims >= D)
    fail("kernels: packed {} stream has {} exact channels of {}", which, s.exact_dims, D);
  if (s.tokens == 0) return;
  if (!s.codes || !s.scales || (!s.shape.symmetric && !s.zeros) || (s.exact_dims > 0 && !s.exact))
    fail("kernels: packed {} stream of {} tokens has a null pointer", which, s.tokens);
  const int64_t Dq = D - s.exact_dims;  // channels in the codes
  check_quant(s.shape, s.tokens, Dq, Dq, s.granularity == Granularity::PerToken);
}

}  // namespace

template <typename P>
void quantize_per_token(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                        P* scales, P* zeros) {
  check_quant(q, T, D, ld, true);
  KVLAB_DISPATCH(quantize_per_token_entry, x, T, D, ld, q, codes, scales, zeros)
}

template <typename P>
void quantize_per_channel(const float* x, int64_t T, int64_t D, int64_t ld, const QuantShape& q, uint32_t* codes,
                          P* scales, P* zeros) {
  check_quant(q, T, D, ld, false);
  KVLAB_DISPATCH(quantize_per_channel_entry, x, T, D, ld, q, codes, scales, zeros)
}

template <typename P>
void dequantize_per_token(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                          const QuantShape& q, float* out, int64_t ld) {
  check_quant(q, T, D, ld, true);
  KVLAB_DISPATCH(dequantize_per_token_entry, codes, scales, zeros, T, D, q, out, ld)
}

template <typename P>
void dequantize_per_channel(const uint32_t* codes, const P* scales, const P* zeros, int64_t T, int64_t D,
                            const QuantShape& q, float* out, int64_t ld) {
  check_quant(q, T, D, ld, false);
  KVLAB_DISPATCH(dequantize_per_channel_entry, codes, scales, zeros, T, D, q, out, ld)
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

void packed_decode_attention(const float* q, int64_t n_q, int64_t D, const PackedStream& k, const Rows& k_full,
                             const PackedStream& v, const Rows& v_full, float softmax_scale, float* out,
                             float* workspace) {
  if (k.tokens + k_full.tokens != v.tokens + v_full.tokens)
    fail("kernels: {} + {} keys but {} + {} values", k.tokens, k_full.tokens, v.tokens, v_full.tokens);
  if (k.tokens + k_full.tokens == 0) fail("kernels: decode attention over an empty cache");
  if ((k_full.tokens > 0 && !k_full.data) || (v_full.tokens > 0 && !v_full.data))
    fail("kernels: full-precision rows of {} keys / {} values with a null pointer", k_full.tokens, v_full.tokens);
  check_stream(k, D, "key");
  check_stream(v, D, "value");
  KVLAB_DISPATCH(decode_attention_entry, q, n_q, D, k, k_full, v, v_full, softmax_scale, out, workspace)
}

void full_decode_attention(const float* q, int64_t n_q, int64_t D, const Rows& k, const Rows& v, float softmax_scale,
                           float* out, float* workspace) {
  packed_decode_attention(q, n_q, D, PackedStream{}, k, PackedStream{}, v, softmax_scale, out, workspace);
}

void linear16_rows(const float* x, int64_t M, int64_t K, const void* w, RowType type, int64_t n0, int64_t n1, float* y,
                   int64_t ldy) {
  if (type == RowType::F32) fail("kernels: linear16_rows reads fp16 or bf16 weights, not fp32");
  if (M < 0 || K <= 0 || n0 < 0 || n1 < n0 || ldy < n1) fail("kernels: linear16 shape M={} K={} n=[{}, {}) ldy={}", M, K, n0, n1, ldy);
  KVLAB_DISPATCH(linear16_entry, x, M, K, w, type, n0, n1, y, ldy)
}

void widen_rows(const void* src, RowType type, int64_t n, float* dst) {
  if (type == RowType::F32) fail("kernels: widen_rows reads fp16 or bf16 values, not fp32");
  KVLAB_DISPATCH(widen_entry, src, type, n, dst)
}

#undef KVLAB_DISPATCH
}  // namespace kvlab::kernels
