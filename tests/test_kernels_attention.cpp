// Packed decode attention (the fast kernel, which never dequantizes the cache) against the
// reference (dequantize, then textbook attention in double), over every layout it serves.
#include <gtest/gtest.h>

#include <c10/util/Half.h>

#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "../kernels/cpu/kernel_entries.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/kernels/packing.h"
#include "test_helpers.h"

namespace kvlab::kernels {
namespace {

// Owns the packed form of T rows of D values.
struct Packed {
  std::vector<uint32_t> codes;
  std::vector<c10::Half> s16, z16;
  std::vector<float> s32, z32;
  PackedStream view;
};

Packed pack(const std::vector<float>& x, int64_t T, int64_t D, Granularity g, QuantShape q, ParamType p) {
  Packed out;
  const bool per_token = g == Granularity::PerToken;
  out.codes.resize(per_token ? T * packed_words(D, q.bits) : (T / q.group) * D * packed_words(q.group, q.bits) + 1);
  const int64_t n = per_token ? T * (D / q.group) : (T / q.group) * D;
  out.s16.resize(n + 1), out.z16.resize(n + 1), out.s32.resize(n + 1), out.z32.resize(n + 1);
  if (T > 0) {
    if (p == ParamType::F16) {
      if (per_token) quantize_per_token<c10::Half>(x.data(), T, D, D, q, out.codes.data(), out.s16.data(), out.z16.data());
      else quantize_per_channel<c10::Half>(x.data(), T, D, D, q, out.codes.data(), out.s16.data(), out.z16.data());
    } else {
      if (per_token) quantize_per_token<float>(x.data(), T, D, D, q, out.codes.data(), out.s32.data(), out.z32.data());
      else quantize_per_channel<float>(x.data(), T, D, D, q, out.codes.data(), out.s32.data(), out.z32.data());
    }
  }
  out.view.granularity = g;
  out.view.shape = q;
  out.view.param = p;
  out.view.tokens = T;
  if (T > 0) {  // an empty stream carries null pointers, as the cache passes it
    out.view.codes = out.codes.data();
    out.view.scales = p == ParamType::F16 ? static_cast<const void*>(out.s16.data()) : out.s32.data();
    out.view.zeros = q.symmetric ? nullptr
                                 : (p == ParamType::F16 ? static_cast<const void*>(out.z16.data()) : out.z32.data());
  }
  return out;
}

struct AttnCase {
  Granularity kg, vg;
  int kbits, vbits;
  int64_t group;
  bool symmetric;
  ParamType param;
  int64_t k_packed, v_packed, total;  // k_full = total - k_packed, v_full = total - v_packed
  int64_t n_q, D;
  int64_t k_exact = 0, v_exact = 0;  // the last channels of packed tokens kept exact (fp32)
};

// The first D - e channels of T rows (what gets packed) and the last e (kept exact).
std::pair<std::vector<float>, std::vector<float>> split_channels(const std::vector<float>& x, int64_t T, int64_t D,
                                                                 int64_t e) {
  std::vector<float> head(T * (D - e)), tail(T * e);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d)
      (d < D - e ? head[t * (D - e) + d] : tail[t * e + d - (D - e)]) = x[t * D + d];
  return {head, tail};
}

enum class Build { Dispatched, Generic, Avx2, Avx512 };

void check(const AttnCase& c, uint32_t seed, Build build = Build::Dispatched) {
  const int64_t D = c.D, S = c.total;
  const std::vector<float> keys = test::normal_floats(S * D, seed, 1.5f), values = test::normal_floats(S * D, seed + 1);
  const std::vector<float> q = test::normal_floats(c.n_q * D, seed + 2);
  const auto [kp, k_exact] =
      split_channels({keys.begin(), keys.begin() + c.k_packed * D}, c.k_packed, D, c.k_exact);
  const auto [vp, v_exact] =
      split_channels({values.begin(), values.begin() + c.v_packed * D}, c.v_packed, D, c.v_exact);
  Packed k = pack(kp, c.k_packed, D - c.k_exact, c.kg, {c.kbits, c.group, c.symmetric}, c.param);
  Packed v = pack(vp, c.v_packed, D - c.v_exact, c.vg, {c.vbits, c.group, c.symmetric}, c.param);
  k.view.exact = c.k_exact > 0 ? k_exact.data() : nullptr, k.view.exact_dims = c.k_exact;
  v.view.exact = c.v_exact > 0 ? v_exact.data() : nullptr, v.view.exact_dims = c.v_exact;
  const float* k_full = keys.data() + c.k_packed * D;
  const float* v_full = values.data() + c.v_packed * D;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<float> out(c.n_q * D), want(c.n_q * D), ws(c.n_q * S);
  switch (build) {  // one build's entry point directly, or the public function (checks, then dispatch)
    case Build::Dispatched:
      packed_decode_attention(q.data(), c.n_q, D, k.view, k_full, S - c.k_packed, v.view, v_full, S - c.v_packed,
                              scale, out.data(), ws.data());
      break;
    case Build::Generic:
      generic::decode_attention_entry(q.data(), c.n_q, D, k.view, Rows(k_full, S - c.k_packed), v.view,
                                      Rows(v_full, S - c.v_packed), scale, out.data(), ws.data());
      break;
    case Build::Avx2:
      avx2::decode_attention_entry(q.data(), c.n_q, D, k.view, Rows(k_full, S - c.k_packed), v.view,
                                   Rows(v_full, S - c.v_packed), scale, out.data(), ws.data());
      break;
    case Build::Avx512:
      avx512::decode_attention_entry(q.data(), c.n_q, D, k.view, Rows(k_full, S - c.k_packed), v.view,
                                     Rows(v_full, S - c.v_packed), scale, out.data(), ws.data());
      break;
  }
  reference::packed_decode_attention(q.data(), c.n_q, D, k.view, k_full, S - c.k_packed, v.view, v_full,
                                     S - c.v_packed, scale, want.data());
  for (int64_t i = 0; i < c.n_q * D; ++i)
    ASSERT_NEAR(out[i], want[i], 2e-5f * (1.f + std::fabs(want[i])))
        << "k " << c.kbits << "b " << (c.kg == Granularity::PerToken ? "tok" : "chan") << ", v " << c.vbits << "b "
        << (c.vg == Granularity::PerToken ? "tok" : "chan") << ", G " << c.group << (c.symmetric ? " sym" : "")
        << (c.param == ParamType::F16 ? " f16" : " f32") << ", packed " << c.k_packed << "/" << c.v_packed << " of "
        << S << ", n_q " << c.n_q << ", D " << D << ", build " << static_cast<int>(build) << ", i " << i;
}

TEST(PackedAttention, KiviLayoutsAllBitsMatchReference) {
  uint32_t seed = 1;
  for (int b : {1, 2, 3, 4, 8})
    for (ParamType p : {ParamType::F16, ParamType::F32})
      for (int64_t n_q : {1, 4})
        // KIVI: keys per-channel in blocks of G, values per-token; exact windows of different lengths.
        check({Granularity::PerChannel, Granularity::PerToken, b, b, 32, false, p, 96, 100, 120, n_q, 128}, seed++);
}

TEST(PackedAttention, EveryLayoutCombinationMatchesReference) {
  uint32_t seed = 100;
  for (Granularity kg : {Granularity::PerToken, Granularity::PerChannel})
    for (Granularity vg : {Granularity::PerToken, Granularity::PerChannel})
      for (bool sym : {false, true})
        for (auto [kb, vb] : std::vector<std::pair<int, int>>{{2, 4}, {3, 2}, {4, 8}})
          for (int64_t G : {8, 16})
            check({kg, vg, kb, vb, G, sym, ParamType::F16, 48, 32, 53, 3, 48}, seed++);
}

TEST(PackedAttention, EmptyPackedOrEmptyFullPartsWork) {
  // Nothing packed yet (null pointers), everything packed, and keys packed further than values.
  check({Granularity::PerChannel, Granularity::PerToken, 2, 2, 16, false, ParamType::F16, 0, 0, 7, 2, 64}, 1);
  check({Granularity::PerChannel, Granularity::PerToken, 2, 2, 16, false, ParamType::F16, 64, 64, 64, 2, 64}, 2);
  check({Granularity::PerToken, Granularity::PerToken, 4, 2, 16, false, ParamType::F32, 50, 0, 50, 1, 64}, 3);
}

TEST(PackedAttention, LongContextMatchesReference) {
  check({Granularity::PerChannel, Granularity::PerToken, 2, 2, 32, false, ParamType::F16, 4096, 4064, 4100, 4, 128}, 9);
}

// Each build this CPU runs, called directly, on the shapes where the builds take different paths:
// the 2- and 4-bit table-lookup loops of the AVX-512 build (token and channel pairs, odd token counts,
// tiles of 128 tokens, groups spanning 1 to 8 words or a partial word, 1 to 5 query heads) and
// the layouts they hand back to the AVX2 loops (odd head_dim, groups that split a word).
TEST(PackedAttention, EveryBuildMatchesReference) {
  std::vector<Build> builds{Build::Generic};
  if (cpu_runs(KernelIsa::Avx2)) builds.push_back(Build::Avx2);
  if (cpu_runs(KernelIsa::Avx512)) builds.push_back(Build::Avx512);
  const auto C = Granularity::PerChannel, T = Granularity::PerToken;
  const std::vector<AttnCase> cases = {
      {C, T, 2, 2, 32, false, ParamType::F16, 288, 301, 421, 1, 128},  // odd value count, 3 tiles
      {C, T, 2, 2, 32, false, ParamType::F32, 256, 257, 300, 2, 128},
      {C, T, 2, 2, 16, true, ParamType::F16, 64, 77, 90, 3, 128},      // 8 groups per row
      {C, T, 2, 2, 64, false, ParamType::F16, 128, 129, 140, 4, 128},  // 2 groups per row
      {C, T, 2, 2, 128, false, ParamType::F16, 128, 130, 131, 5, 128}, // 1 group per row
      {C, T, 2, 2, 48, false, ParamType::F16, 96, 95, 100, 2, 96},     // a group of 3 words
      {C, T, 2, 2, 8, false, ParamType::F16, 40, 40, 45, 2, 64},       // half-word key blocks
      {C, T, 2, 2, 16, false, ParamType::F16, 48, 48, 50, 1, 80},      // 5 words per row
      {C, T, 2, 2, 15, false, ParamType::F16, 45, 44, 50, 2, 45},      // odd head_dim
      {C, C, 2, 2, 16, false, ParamType::F16, 32, 32, 40, 2, 48},
      {T, T, 2, 4, 16, false, ParamType::F16, 33, 17, 41, 3, 48},
      {C, T, 4, 2, 32, false, ParamType::F16, 64, 63, 70, 4, 64},
      // 4 bits: key blocks of 1 to 8 words (single words, pairs, two pairs), values in 16-channel
      // chunks of 1 to 8 per group.
      {C, T, 4, 4, 32, false, ParamType::F16, 288, 301, 421, 1, 128},
      {C, T, 4, 4, 8, true, ParamType::F16, 40, 41, 45, 2, 64},
      {C, T, 4, 4, 16, false, ParamType::F32, 48, 47, 50, 3, 48},
      {C, T, 4, 4, 64, false, ParamType::F16, 128, 129, 140, 4, 128},
      {C, T, 4, 4, 128, true, ParamType::F16, 128, 130, 131, 5, 128},
      {C, T, 4, 4, 24, false, ParamType::F16, 48, 47, 50, 2, 96},     // 3 words per key block
      {C, T, 4, 4, 16, false, ParamType::F16, 32, 33, 40, 4, 80},     // 5 chunks per value row
  };
  uint32_t seed = 500;
  for (Build b : builds)
    for (const AttnCase& c : cases) check(c, seed++, b);
}

// MixKVQ's layout: the last channels of each packed token kept exact (keys, values or both), fused
// into the same pass: per-channel and per-token codes over the other channels, 2 and 4 bits.
TEST(PackedAttention, ExactChannelsMatchReference) {
  std::vector<Build> builds{Build::Dispatched, Build::Generic};
  if (cpu_runs(KernelIsa::Avx2)) builds.push_back(Build::Avx2);
  if (cpu_runs(KernelIsa::Avx512)) builds.push_back(Build::Avx512);
  const auto C = Granularity::PerChannel, T = Granularity::PerToken;
  const std::vector<AttnCase> cases = {
      {C, T, 2, 2, 32, false, ParamType::F16, 96, 100, 120, 4, 128, 8, 0},  // 120 packed channels
      {C, T, 2, 2, 32, false, ParamType::F16, 96, 100, 120, 1, 128, 2, 0},
      {C, T, 4, 4, 16, false, ParamType::F16, 48, 47, 60, 3, 64, 4, 16},    // values: 48 packed + 16 exact
      {T, T, 2, 2, 16, true, ParamType::F32, 33, 40, 45, 2, 64, 16, 16},
      {C, C, 3, 2, 8, false, ParamType::F16, 40, 32, 41, 2, 36, 4, 4},
  };
  uint32_t seed = 900;
  for (Build b : builds)
    for (const AttnCase& c : cases) check(c, seed++, b);
}

TEST(PackedAttention, ExactChannelCountMustLeaveCodes) {
  const std::vector<float> q(64, 1.f), rows(4 * 64, 1.f);
  std::vector<float> out(64), ws(4);
  PackedStream k, v;
  k.exact_dims = 64;  // nothing left to quantize
  EXPECT_THROW(packed_decode_attention(q.data(), 1, 64, k, rows.data(), 4, v, rows.data(), 4, 1.f, out.data(),
                                       ws.data()),
               Error);
}

TEST(PackedAttention, MismatchedLengthsAreAnError) {
  std::vector<float> q(64), kf(64 * 3), vf(64 * 2), out(64), ws(8);
  PackedStream none;
  EXPECT_THROW(packed_decode_attention(q.data(), 1, 64, none, kf.data(), 3, none, vf.data(), 2, 1.f, out.data(),
                                       ws.data()),
               Error);
}

}  // namespace
}  // namespace kvlab::kernels
