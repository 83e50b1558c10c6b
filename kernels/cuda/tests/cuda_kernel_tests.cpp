// The CUDA kernels against the CPU reference (kernels/cpu/*reference*.cpp). The same source runs
// on a GPU (cuda_kernel_tests, built by nvcc) and in the host emulator (kvlab_cuda_emu_tests, part
// of ctest): quantize-and-pack must give the reference's codes, scales and zeros bit for bit, and
// leave the rows already stored untouched; decode attention must match the reference (dequantize,
// then attention in double) within |out - ref| <= 1e-4 * (1 + |ref|) (fp32 accumulation over up to
// 128K tokens, exp2 in fp32; measured errors are far below, see the README).
#include <gtest/gtest.h>

#include <c10/util/Half.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kvlab/cuda/kv_cuda.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/kernels/packing.h"

namespace {

using kvlab::kernels::Granularity;
using kvlab::kernels::ParamType;
using kvlab::kernels::QuantShape;

#define CUDA_OK(expr)                                                                                 \
  do {                                                                                                \
    const cudaError_t e_ = (expr);                                                                    \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_) << " " << kvlab_cuda_error_detail(); \
  } while (0)

// Owns device memory.
struct Dev {
  void* p = nullptr;
  size_t bytes = 0;
  Dev() = default;
  explicit Dev(size_t n) : bytes(n) {
    if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) p = nullptr;
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  Dev(Dev&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  Dev& operator=(Dev&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~Dev() { if (p) cudaFree(p); }
  template <typename T>
  static Dev from(const std::vector<T>& v) {
    Dev d(v.size() * sizeof(T));
    cudaMemcpy(d.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
  }
  template <typename T>
  std::vector<T> get(size_t n) const {
    std::vector<T> v(n);
    cudaDeviceSynchronize();
    cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
  template <typename T>
  T* as() const { return static_cast<T*>(p); }
};

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f, float shift = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(shift, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

uint16_t to_bf16(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t half_bits(float f) { return c10::Half(f).x; }
float from_half(uint16_t h) { return static_cast<float>(c10::Half(h, c10::Half::from_bits())); }

// Values in `dtype` as raw bytes, and what they are as fp32.
struct Typed {
  std::vector<char> bytes;
  std::vector<float> as_float;
};
Typed typed(const std::vector<float>& x, int dtype) {
  Typed t;
  t.as_float.resize(x.size());
  if (dtype == KVLAB_CUDA_F32) {
    t.bytes.resize(x.size() * 4);
    std::memcpy(t.bytes.data(), x.data(), x.size() * 4);
    t.as_float = x;
    return t;
  }
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    h[i] = dtype == KVLAB_CUDA_F16 ? half_bits(x[i]) : to_bf16(x[i]);
    t.as_float[i] = dtype == KVLAB_CUDA_F16 ? from_half(h[i]) : from_bf16(h[i]);
  }
  t.bytes.resize(h.size() * 2);
  std::memcpy(t.bytes.data(), h.data(), h.size() * 2);
  return t;
}
int elem_size(int dtype) { return dtype == KVLAB_CUDA_F32 ? 4 : 2; }

// ---- quantize-and-pack -------------------------------------------------------------------------
struct QuantCase {
  int granularity;  // KVLAB_CUDA_PER_TOKEN / PER_CHANNEL
  int bits, group;
  bool symmetric;
  int param;        // KVLAB_CUDA_F16 / F32
  int in_dtype;
  int dim;
  int64_t existing, n, cap;  // tokens already stored, appended, capacity per stream
  int streams;
};

std::string describe(const QuantCase& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s b%d G%d%s %s in%d D%d existing %lld n %lld", c.granularity ? "chan" : "tok",
                c.bits, c.group, c.symmetric ? " sym" : "", c.param == KVLAB_CUDA_F16 ? "f16" : "f32", c.in_dtype,
                c.dim, (long long)c.existing, (long long)c.n);
  return buf;
}

// Reference: the CPU quantizer on the fp32 values of the (converted) input, per stream.
template <typename P>
void reference_quantize(const QuantCase& c, const float* x, uint32_t* codes, P* s, P* z) {
  const QuantShape q{c.bits, c.group, c.symmetric};
  if (c.granularity == KVLAB_CUDA_PER_TOKEN) kvlab::kernels::reference::quantize_per_token<P>(x, c.n, c.dim, c.dim, q, codes, s, z);
  else kvlab::kernels::reference::quantize_per_channel<P>(x, c.n, c.dim, c.dim, q, codes, s, z);
}

void check_quantize(const QuantCase& c, uint32_t seed) {
  const bool per_token = c.granularity == KVLAB_CUDA_PER_TOKEN;
  const int64_t words_row = per_token ? kvlab::kernels::packed_words(c.dim, c.bits)
                                      : c.dim * kvlab::kernels::packed_words(c.group, c.bits);  // per token / per block
  const int64_t rows_cap = per_token ? c.cap : c.cap / c.group;
  const int64_t prow = per_token ? c.dim / c.group : c.dim;
  const int64_t codes_stream = rows_cap * words_row, param_stream = rows_cap * prow;
  const int psize = c.param == KVLAB_CUDA_F16 ? 2 : 4;
  // Storage filled with a pattern: what is already stored must survive the append.
  std::vector<uint32_t> codes0(static_cast<size_t>(c.streams * codes_stream));
  for (size_t i = 0; i < codes0.size(); ++i) codes0[i] = 0x9e3779b9u * static_cast<uint32_t>(i + 1);
  std::vector<char> params0(static_cast<size_t>(c.streams * param_stream * psize));
  for (size_t i = 0; i < params0.size(); ++i) params0[i] = static_cast<char>(i * 7 + 3);
  // Input: fp32 values, with a few repeated values and exact zeros (ties, -0/+0, S = 0 groups).
  std::vector<float> raw = randn(static_cast<size_t>(c.streams * c.n * c.dim), seed, 1.3f, 0.2f);
  for (size_t i = 0; i < raw.size(); i += 37) raw[i] = 0.f;
  for (size_t i = 5; i < raw.size(); i += 41) raw[i] = -0.f;
  if (!raw.empty() && c.n >= c.group && c.dim >= c.group) {  // one constant group per stream
    for (int s = 0; s < c.streams; ++s)
      for (int j = 0; j < c.group; ++j) raw[static_cast<size_t>(s * c.n * c.dim + (per_token ? j : j * c.dim))] = 0.75f;
  }
  const Typed in = typed(raw, c.in_dtype);
  Dev x = Dev::from(in.bytes), codes = Dev::from(codes0), scales = Dev::from(params0), zeros = Dev::from(params0);
  Dev status(16);
  cudaMemset(status.p, 0, 16);
  kvlab_cuda_rows rows{x.p, c.in_dtype, c.n, c.dim, c.n * c.dim};
  kvlab_cuda_packed dst{};
  dst.granularity = c.granularity, dst.bits = c.bits, dst.group = c.group, dst.symmetric = c.symmetric;
  dst.param_dtype = c.param, dst.dim = c.dim, dst.tokens = c.existing;
  dst.codes = codes.as<uint32_t>(), dst.codes_stream_stride = codes_stream;
  dst.scales = scales.p, dst.zeros = c.symmetric ? nullptr : zeros.p, dst.param_stream_stride = param_stream;
  CUDA_OK(kvlab_cuda_quantize_append(&rows, c.n, c.streams, &dst, status.as<int32_t>(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto st = status.get<int32_t>(4);
  ASSERT_EQ(st[0], 0) << describe(c) << ": status " << st[0] << " at stream " << st[1] << " token " << st[2];
  const auto got_codes = codes.get<uint32_t>(codes0.size());
  const auto got_s = scales.get<char>(params0.size()), got_z = zeros.get<char>(params0.size());

  const int64_t first_row = per_token ? c.existing : c.existing / c.group;
  const int64_t new_rows = per_token ? c.n : c.n / c.group;
  for (int s = 0; s < c.streams; ++s) {
    std::vector<uint32_t> want_codes(static_cast<size_t>(new_rows * words_row));
    std::vector<char> want_s(static_cast<size_t>(new_rows * prow * psize)), want_z(want_s.size());
    const float* xs = in.as_float.data() + s * c.n * c.dim;
    if (c.param == KVLAB_CUDA_F16)
      reference_quantize<c10::Half>(c, xs, want_codes.data(), reinterpret_cast<c10::Half*>(want_s.data()),
                                    reinterpret_cast<c10::Half*>(want_z.data()));
    else
      reference_quantize<float>(c, xs, want_codes.data(), reinterpret_cast<float*>(want_s.data()),
                                reinterpret_cast<float*>(want_z.data()));
    for (int64_t r = 0; r < rows_cap; ++r) {
      const bool fresh = r >= first_row && r < first_row + new_rows;
      for (int64_t w = 0; w < words_row; ++w) {
        const size_t at = static_cast<size_t>(s * codes_stream + r * words_row + w);
        const uint32_t want = fresh ? want_codes[static_cast<size_t>((r - first_row) * words_row + w)] : codes0[at];
        ASSERT_EQ(got_codes[at], want) << describe(c) << ": stream " << s << " row " << r << " word " << w
                                       << (fresh ? " (appended)" : " (already stored)");
      }
      for (int64_t i = 0; i < prow * psize; ++i) {
        const size_t at = static_cast<size_t>((s * param_stream + r * prow) * psize + i);
        const size_t rel = static_cast<size_t>((r - first_row) * prow * psize + i);
        ASSERT_EQ(got_s[at], fresh ? want_s[rel] : params0[at]) << describe(c) << ": scale byte, stream " << s << " row " << r;
        if (!c.symmetric)
          ASSERT_EQ(got_z[at], fresh ? want_z[rel] : params0[at]) << describe(c) << ": zero byte, stream " << s << " row " << r;
      }
    }
  }
}

TEST(CudaQuantize, PerTokenEveryBitWidthMatchesReferenceBitForBit) {
  uint32_t seed = 1;
  for (int b : {1, 2, 3, 4, 8})
    for (bool sym : {false, true}) {
      if (sym && b < 2) continue;
      for (int p : {KVLAB_CUDA_F16, KVLAB_CUDA_F32})
        for (int in : {KVLAB_CUDA_F32, KVLAB_CUDA_F16, KVLAB_CUDA_BF16})
          check_quantize({KVLAB_CUDA_PER_TOKEN, b, 32, sym, p, in, 128, 5, 70, 80, 3}, seed++);
    }
}

TEST(CudaQuantize, PerChannelEveryBitWidthMatchesReferenceBitForBit) {
  uint32_t seed = 100;
  for (int b : {1, 2, 3, 4, 8})
    for (bool sym : {false, true}) {
      if (sym && b < 2) continue;
      for (int p : {KVLAB_CUDA_F16, KVLAB_CUDA_F32})
        for (int in : {KVLAB_CUDA_F32, KVLAB_CUDA_F16, KVLAB_CUDA_BF16})
          check_quantize({KVLAB_CUDA_PER_CHANNEL, b, 32, sym, p, in, 128, 64, 96, 192, 3}, seed++);
    }
}

TEST(CudaQuantize, OddGroupsAndWidthsMatchReference) {
  uint32_t seed = 200;
  // KVmix's 3-bit keys with G = 30 (10 codes a word, no padding), whole-head groups, head_dim 8,
  // channels that are not a multiple of 32 (MixKVQ's quantized part), a channel count above 128.
  check_quantize({KVLAB_CUDA_PER_CHANNEL, 3, 30, false, KVLAB_CUDA_F16, KVLAB_CUDA_F16, 128, 30, 60, 120, 2}, seed++);
  check_quantize({KVLAB_CUDA_PER_TOKEN, 2, 120, false, KVLAB_CUDA_F16, KVLAB_CUDA_F32, 120, 0, 33, 40, 2}, seed++);
  check_quantize({KVLAB_CUDA_PER_TOKEN, 4, 8, true, KVLAB_CUDA_F32, KVLAB_CUDA_BF16, 8, 2, 9, 16, 4}, seed++);
  check_quantize({KVLAB_CUDA_PER_CHANNEL, 2, 8, false, KVLAB_CUDA_F16, KVLAB_CUDA_F32, 8, 8, 16, 32, 4}, seed++);
  check_quantize({KVLAB_CUDA_PER_CHANNEL, 4, 16, false, KVLAB_CUDA_F16, KVLAB_CUDA_F16, 120, 0, 48, 64, 1}, seed++);
  check_quantize({KVLAB_CUDA_PER_CHANNEL, 2, 32, false, KVLAB_CUDA_F16, KVLAB_CUDA_F16, 256, 32, 32, 64, 2}, seed++);
  check_quantize({KVLAB_CUDA_PER_TOKEN, 3, 32, false, KVLAB_CUDA_F16, KVLAB_CUDA_F16, 256, 1, 1, 2, 2}, seed++);
}

TEST(CudaQuantize, NonFiniteInputAndParameterOverflowAreReported) {
  const int D = 64, n = 32;
  for (int g : {KVLAB_CUDA_PER_TOKEN, KVLAB_CUDA_PER_CHANNEL}) {
    for (int kind : {1, 2}) {
      std::vector<float> x = randn(D * n, 7);
      if (kind == 1) x[static_cast<size_t>(5 * D + 9)] = NAN;
      else x[static_cast<size_t>(5 * D + 9)] = 1e6f, x[static_cast<size_t>(5 * D + 8)] = -1e6f;  // range over fp16
      Dev xd = Dev::from(x), codes(64 * 1024), s(64 * 1024), z(64 * 1024), status(16);
      cudaMemset(status.p, 0, 16);
      kvlab_cuda_rows rows{xd.p, KVLAB_CUDA_F32, n, D, n * D};
      kvlab_cuda_packed dst{};
      dst.granularity = g, dst.bits = 2, dst.group = 32, dst.param_dtype = KVLAB_CUDA_F16, dst.dim = D;
      dst.codes = codes.as<uint32_t>(), dst.scales = s.p, dst.zeros = z.p;
      CUDA_OK(kvlab_cuda_quantize_append(&rows, n, 1, &dst, status.as<int32_t>(), nullptr));
      const auto st = status.get<int32_t>(4);
      EXPECT_EQ(st[0], kind) << "granularity " << g;
      if (kind == 1) {
        EXPECT_EQ(st[2], 5);
        EXPECT_EQ(st[3], 9);
      } else if (g == KVLAB_CUDA_PER_TOKEN) {
        EXPECT_EQ(st[2], 5);  // the group of channels 0..31 of token 5
      }
    }
  }
}

TEST(CudaQuantize, BadArgumentsAreRejectedWithAMessage) {
  Dev x(1024), c(1024), s(1024), z(1024);
  kvlab_cuda_rows rows{x.p, KVLAB_CUDA_F32, 4, 32, 128};
  kvlab_cuda_packed dst{};
  dst.granularity = KVLAB_CUDA_PER_TOKEN, dst.bits = 5, dst.group = 32, dst.param_dtype = KVLAB_CUDA_F16, dst.dim = 32;
  dst.codes = c.as<uint32_t>(), dst.scales = s.p, dst.zeros = z.p;
  EXPECT_EQ(kvlab_cuda_quantize_append(&rows, 4, 1, &dst, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_NE(std::string(kvlab_cuda_error_detail()).find("bit width 5"), std::string::npos) << kvlab_cuda_error_detail();
  dst.bits = 2, dst.group = 12;
  EXPECT_EQ(kvlab_cuda_quantize_append(&rows, 4, 1, &dst, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_NE(std::string(kvlab_cuda_error_detail()).find("group size 12"), std::string::npos);
  dst.granularity = KVLAB_CUDA_PER_CHANNEL, dst.group = 32;
  EXPECT_EQ(kvlab_cuda_quantize_append(&rows, 4, 1, &dst, nullptr, nullptr), cudaErrorInvalidValue);
  dst.bits = 1, dst.symmetric = 1;
  EXPECT_EQ(kvlab_cuda_quantize_append(&rows, 4, 1, &dst, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// ---- decode attention --------------------------------------------------------------------------
struct AttnCase {
  int kg, vg;                 // granularities
  int kbits, vbits, kgroup, vgroup;
  bool symmetric;
  int param;
  int64_t k_packed, v_packed, total;
  int n_q, D;
  int k_exact = 0, v_exact = 0;
  int full_dtype = KVLAB_CUDA_F16;
  int streams = 2;
  int splits = 0;
};

std::string describe(const AttnCase& c) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "k %db %s G%d, v %db %s G%d%s %s, packed %lld/%lld of %lld, n_q %d, D %d, exact %d/%d, full dtype %d, "
                "splits %d",
                c.kbits, c.kg ? "chan" : "tok", c.kgroup, c.vbits, c.vg ? "chan" : "tok", c.vgroup,
                c.symmetric ? " sym" : "", c.param == KVLAB_CUDA_F16 ? "f16" : "f32", (long long)c.k_packed,
                (long long)c.v_packed, (long long)c.total, c.n_q, c.D, c.k_exact, c.v_exact, c.full_dtype, c.splits);
  return buf;
}

// One of K or V, every stream: packed on the device with the kernel under test (checked above),
// the CPU view for the reference, and the full-precision rows.
struct Side {
  Dev codes, scales, zeros, exact, full;
  std::vector<uint32_t> h_codes;
  std::vector<char> h_scales, h_zeros;
  std::vector<float> h_exact, h_full;  // fp32 values (as the device holds them)
  kvlab_cuda_packed packed{};
  kvlab_cuda_rows full_rows{};
  int64_t words_per_stream = 0, params_per_stream = 0;
};

void build_side(Side& side, const std::vector<float>& x, int streams, int64_t S, int D, int granularity, int bits,
                int group, bool symmetric, int param, int64_t packed, int exact_dims, int full_dtype) {
  const int Dq = D - exact_dims;
  const bool per_token = granularity == KVLAB_CUDA_PER_TOKEN;
  const int64_t cap = packed + 64;  // spare rows, as the cache holds
  const int64_t rows_cap = per_token ? cap : (cap + group - 1) / group;
  side.words_per_stream = rows_cap * (per_token ? kvlab::kernels::packed_words(Dq, bits) : Dq * kvlab::kernels::packed_words(group, bits));
  side.params_per_stream = rows_cap * (per_token ? Dq / group : Dq);
  const int psize = param == KVLAB_CUDA_F16 ? 2 : 4;
  side.codes = Dev(static_cast<size_t>(streams * side.words_per_stream * 4));
  side.scales = Dev(static_cast<size_t>(streams * side.params_per_stream * psize));
  side.zeros = Dev(static_cast<size_t>(streams * side.params_per_stream * psize));
  // Split each stream's rows: packed tokens' first Dq channels -> quantize; their last exact_dims ->
  // exact rows (fp16); the rest -> full rows.
  std::vector<float> to_pack(static_cast<size_t>(streams * packed * Dq)), exact(static_cast<size_t>(streams * packed * exact_dims));
  std::vector<float> full(static_cast<size_t>(streams * (S - packed) * D));
  for (int s = 0; s < streams; ++s)
    for (int64_t t = 0; t < S; ++t)
      for (int d = 0; d < D; ++d) {
        const float v = x[static_cast<size_t>((s * S + t) * D + d)];
        if (t < packed) {
          if (d < Dq) to_pack[static_cast<size_t>((s * packed + t) * Dq + d)] = v;
          else exact[static_cast<size_t>((s * packed + t) * exact_dims + d - Dq)] = v;
        } else {
          full[static_cast<size_t>((s * (S - packed) + t - packed) * D + d)] = v;
        }
      }
  Dev in = Dev::from(to_pack);
  kvlab_cuda_packed& p = side.packed;
  p.granularity = granularity, p.bits = bits, p.group = group, p.symmetric = symmetric, p.param_dtype = param;
  p.dim = Dq, p.tokens = 0;
  p.codes = side.codes.as<uint32_t>(), p.codes_stream_stride = side.words_per_stream;
  p.scales = side.scales.p, p.zeros = symmetric ? nullptr : side.zeros.p, p.param_stream_stride = side.params_per_stream;
  if (packed > 0) {
    kvlab_cuda_rows r{in.p, KVLAB_CUDA_F32, packed, Dq, packed * Dq};
    ASSERT_EQ(kvlab_cuda_quantize_append(&r, packed, streams, &p, nullptr, nullptr), cudaSuccess) << kvlab_cuda_error_detail();
  }
  p.tokens = packed;
  side.h_codes = side.codes.get<uint32_t>(static_cast<size_t>(streams * side.words_per_stream));
  side.h_scales = side.scales.get<char>(static_cast<size_t>(streams * side.params_per_stream * psize));
  side.h_zeros = side.zeros.get<char>(static_cast<size_t>(streams * side.params_per_stream * psize));
  const Typed ex = typed(exact, KVLAB_CUDA_F16), fu = typed(full, full_dtype);
  side.h_exact = ex.as_float, side.h_full = fu.as_float;
  side.exact = Dev::from(ex.bytes), side.full = Dev::from(fu.bytes);
  p.exact = exact_dims > 0 ? side.exact.p : nullptr, p.exact_dtype = KVLAB_CUDA_F16, p.exact_dims = exact_dims;
  p.exact_row_stride = exact_dims, p.exact_stream_stride = packed * exact_dims;
  side.full_rows = {side.full.p, full_dtype, S - packed, D, (S - packed) * D};
}

// The CPU reference's view of stream s of a side.
kvlab::kernels::PackedStream host_view(const Side& side, int s, int psize) {
  kvlab::kernels::PackedStream v;
  const kvlab_cuda_packed& p = side.packed;
  v.granularity = p.granularity == KVLAB_CUDA_PER_TOKEN ? Granularity::PerToken : Granularity::PerChannel;
  v.shape = {p.bits, p.group, p.symmetric != 0};
  v.param = p.param_dtype == KVLAB_CUDA_F16 ? ParamType::F16 : ParamType::F32;
  v.tokens = p.tokens;
  if (p.tokens > 0) {
    v.codes = side.h_codes.data() + s * side.words_per_stream;
    v.scales = side.h_scales.data() + s * side.params_per_stream * psize;
    v.zeros = p.symmetric ? nullptr : side.h_zeros.data() + s * side.params_per_stream * psize;
    if (p.exact_dims > 0) v.exact = side.h_exact.data() + s * p.tokens * p.exact_dims, v.exact_dims = p.exact_dims;
  }
  return v;
}

// Returns the largest |out - ref| / (1 + |ref|).
double check_attention(const AttnCase& c, uint32_t seed) {
  const int64_t S = c.total;
  const int D = c.D;
  const std::vector<float> keys = randn(static_cast<size_t>(c.streams * S * D), seed, 1.5f);
  const std::vector<float> values = randn(static_cast<size_t>(c.streams * S * D), seed + 1);
  const std::vector<float> q = randn(static_cast<size_t>(c.streams * c.n_q * D), seed + 2);
  Side k, v;
  build_side(k, keys, c.streams, S, D, c.kg, c.kbits, c.kgroup, c.symmetric, c.param, c.k_packed, c.k_exact, c.full_dtype);
  build_side(v, values, c.streams, S, D, c.vg, c.vbits, c.vgroup, c.symmetric, c.param, c.v_packed, c.v_exact, c.full_dtype);
  if (::testing::Test::HasFatalFailure()) return 1e30;
  Dev qd = Dev::from(q), out(static_cast<size_t>(c.streams * c.n_q * D * 4));
  cudaMemset(out.p, 0xff, static_cast<size_t>(c.streams * c.n_q * D * 4));  // NaN: every element must be written
  kvlab_cuda_decode_args a{};
  a.q = qd.as<float>(), a.q_stream_stride = c.n_q * D, a.n_q = c.n_q, a.dim = D, a.streams = c.streams;
  a.k = k.packed, a.v = v.packed, a.k_full = k.full_rows, a.v_full = v.full_rows;
  a.softmax_scale = 1.f / std::sqrt(static_cast<float>(D));
  a.out = out.as<float>(), a.out_stream_stride = c.n_q * D, a.splits = c.splits;
  const size_t ws_bytes = kvlab_cuda_decode_workspace_bytes(&a);
  Dev ws(ws_bytes);
  a.workspace = ws.p, a.workspace_bytes = ws_bytes;
  const cudaError_t e = kvlab_cuda_decode_attention(&a, nullptr);
  EXPECT_EQ(e, cudaSuccess) << describe(c) << ": " << cudaGetErrorString(e) << " " << kvlab_cuda_error_detail();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto got = out.get<float>(static_cast<size_t>(c.streams * c.n_q * D));
  const int psize = c.param == KVLAB_CUDA_F16 ? 2 : 4;
  double worst = 0;
  for (int s = 0; s < c.streams; ++s) {
    const auto kv = host_view(k, s, psize), vv = host_view(v, s, psize);
    std::vector<float> want(static_cast<size_t>(c.n_q * D));
    kvlab::kernels::reference::packed_decode_attention(
        q.data() + s * c.n_q * D, c.n_q, D, kv, k.h_full.data() + s * (S - c.k_packed) * D, S - c.k_packed, vv,
        v.h_full.data() + s * (S - c.v_packed) * D, S - c.v_packed, a.softmax_scale, want.data());
    for (int i = 0; i < c.n_q * D; ++i) {
      const float g = got[static_cast<size_t>(s * c.n_q * D + i)], w = want[static_cast<size_t>(i)];
      const double err = std::fabs(static_cast<double>(g) - w) / (1.0 + std::fabs(w));
      if (!(err <= 1e-4)) {
        ADD_FAILURE() << describe(c) << ": stream " << s << " head " << i / D << " channel " << i % D << ": got " << g
                      << ", reference " << w;
        return err;
      }
      worst = std::max(worst, err);
    }
  }
  return worst;
}

constexpr int TOK = KVLAB_CUDA_PER_TOKEN, CHAN = KVLAB_CUDA_PER_CHANNEL, F16 = KVLAB_CUDA_F16, F32 = KVLAB_CUDA_F32;

TEST(CudaDecodeAttention, KiviLayoutEveryBitWidthMatchesReference) {
  uint32_t seed = 1;
  double worst = 0;
  for (int b : {1, 2, 3, 4, 8})
    for (int p : {F16, F32})
      for (int n_q : {1, 4}) {
        // Keys per-channel, values per-token; windows of different lengths; several chunks.
        worst = std::max(worst, check_attention({CHAN, TOK, b, b, 32, 32, false, p, 512, 530, 600, n_q, 128}, seed++));
        if (HasFailure()) return;
      }
  std::printf("worst relative error %.3g\n", worst);
}

TEST(CudaDecodeAttention, MixedKeyAndValueWidths) {
  uint32_t seed = 50;
  for (auto [kb, vb] : std::vector<std::pair<int, int>>{{2, 4}, {3, 2}, {4, 8}, {8, 3}, {2, 1}}) {
    check_attention({CHAN, TOK, kb, vb, 32, 32, false, F16, 768, 800, 900, 4, 128}, seed++);
    if (HasFailure()) return;
  }
  // KVmix's 3-bit keys with G = 30 (240-token chunks), one and three query heads.
  check_attention({CHAN, TOK, 3, 4, 30, 32, false, F16, 480, 500, 560, 1, 128}, seed++);
  check_attention({CHAN, TOK, 3, 2, 30, 32, false, F16, 720, 704, 800, 3, 128}, seed++);
}

TEST(CudaDecodeAttention, EveryLayoutCombinationMatchesReference) {
  uint32_t seed = 100;
  for (int kg : {TOK, CHAN})
    for (int vg : {TOK, CHAN})
      for (bool sym : {false, true})
        for (auto [kb, vb] : std::vector<std::pair<int, int>>{{2, 4}, {3, 2}, {4, 8}})
          for (int G : {8, 16}) {
            check_attention({kg, vg, kb, vb, G, G, sym, F16, 272, 256, 301, 3, 48}, seed++);
            if (HasFailure()) return;
          }
}

TEST(CudaDecodeAttention, GqaGroupsAndHeadDims) {
  uint32_t seed = 200;
  for (int n_q : {1, 2, 4, 5, 7, 8})
    for (int D : {64, 128}) {
      check_attention({CHAN, TOK, 2, 2, 32, 32, false, F16, 512, 544, 600, n_q, D}, seed++);
      if (HasFailure()) return;
    }
  check_attention({CHAN, TOK, 2, 2, 8, 8, false, F16, 256, 256, 270, 4, 8}, seed++);     // stories260K: head_dim 8
  check_attention({CHAN, TOK, 4, 4, 32, 32, false, F16, 256, 256, 300, 2, 256}, seed++);  // head_dim 256
}

TEST(CudaDecodeAttention, EmptyPackedOrEmptyFullParts) {
  uint32_t seed = 300;
  check_attention({CHAN, TOK, 2, 2, 32, 32, false, F16, 0, 0, 77, 4, 128}, seed++);     // nothing packed yet
  check_attention({CHAN, TOK, 2, 2, 32, 32, false, F16, 512, 512, 512, 4, 128}, seed++);  // no window
  check_attention({CHAN, TOK, 2, 2, 32, 32, false, F16, 512, 0, 600, 1, 128}, seed++);    // values 16-bit
  check_attention({CHAN, TOK, 2, 2, 32, 32, false, F16, 0, 512, 520, 1, 128}, seed++);    // keys 16-bit
  check_attention({CHAN, TOK, 2, 2, 32, 32, false, F16, 0, 0, 1, 4, 128}, seed++);        // one token
}

TEST(CudaDecodeAttention, FullPrecisionRowsInEveryDtype) {
  uint32_t seed = 400;
  for (int dt : {KVLAB_CUDA_F32, KVLAB_CUDA_F16, KVLAB_CUDA_BF16}) {
    AttnCase c{CHAN, TOK, 2, 4, 32, 32, false, F16, 256, 300, 420, 4, 128};
    c.full_dtype = dt;
    check_attention(c, seed++);
    if (HasFailure()) return;
  }
}

TEST(CudaDecodeAttention, MixKvqExactChannels) {
  uint32_t seed = 500;
  for (int ek : {8, 16}) {
    AttnCase c{CHAN, TOK, 2, 2, 32, 32, false, F16, 512, 540, 600, 4, 128};
    c.k_exact = ek;
    check_attention(c, seed++);
    c.v_exact = 32;  // the kernel serves exact value channels too (96 coded channels, G 32)
    check_attention(c, seed++);
    c.n_q = 1;
    check_attention(c, seed++);
    if (HasFailure()) return;
  }
}

TEST(CudaDecodeAttention, SplitCountsAgree) {
  uint32_t seed = 600;
  for (int splits : {1, 2, 3, 7, 100}) {
    AttnCase c{CHAN, TOK, 2, 2, 32, 32, false, F16, 1536, 1600, 1700, 4, 128};
    c.splits = splits;
    c.streams = 1;
    check_attention(c, seed);  // same inputs, every split count
    if (HasFailure()) return;
  }
}

TEST(CudaDecodeAttention, LongContext) {
  // 32K tokens on a device; a shorter one in the emulator, which runs every thread on one core.
#if defined(KVLAB_CUDA_EMULATE)
  const int64_t S = 4096;
#else
  const int64_t S = 32768;
#endif
  uint32_t seed = 700;
  for (int b : {2, 4}) {
    AttnCase c{CHAN, TOK, b, b, 32, 32, false, F16, S - 128, S - 128, S, 4, 128};
    c.streams = 2;
    const double worst = check_attention(c, seed++);
    std::printf("%lld tokens, %d bits: worst relative error %.3g\n", (long long)S, b, worst);
    if (HasFailure()) return;
  }
}

TEST(CudaDecodeAttention, BadArgumentsAreRejectedWithAMessage) {
  kvlab_cuda_decode_args a{};
  a.n_q = 1, a.dim = 128, a.streams = 1;
  a.k.dim = 128, a.v.dim = 128;
  a.k_full.tokens = 5, a.v_full.tokens = 6;
  EXPECT_EQ(kvlab_cuda_decode_attention(&a, nullptr), cudaErrorInvalidValue);
  EXPECT_NE(std::string(kvlab_cuda_error_detail()).find("5 keys but 6 values"), std::string::npos) << kvlab_cuda_error_detail();
  a.v_full.tokens = 5;
  a.k.dim = 120;
  EXPECT_EQ(kvlab_cuda_decode_attention(&a, nullptr), cudaErrorInvalidValue);
  EXPECT_NE(std::string(kvlab_cuda_error_detail()).find("head_dim 128"), std::string::npos) << kvlab_cuda_error_detail();
}

}  // namespace

// Exit codes: 0 pass, 1 a test failed, 77 no usable CUDA device (scripts/run-gpu.sh and ctest
// treat 77 as "skipped").
int main(int argc, char** argv) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("cuda_kernel_tests: no CUDA device (%s); nothing run\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
#if defined(KVLAB_CUDA_EMULATE)
  if (!::testing::GTEST_FLAG(list_tests)) std::printf("cuda_kernel_tests: emulated device (host fibers)\n");
#endif
  return RUN_ALL_TESTS();
}
