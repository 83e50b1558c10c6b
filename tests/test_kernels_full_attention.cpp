// Decode attention over full-precision rows read in their stored type (fp32, fp16, bf16), the decode
// path of the full-precision cache, against the reference (the same rows widened, textbook attention
// in double); every kernel build this CPU runs, and packed caches whose exact window is 16-bit.
#include <gtest/gtest.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <random>
#include <vector>

#include "../kernels/cpu/kernel_entries.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/kernels/packing.h"
#include "test_helpers.h"

namespace kvlab::kernels {
namespace {

// Rows stored in one type: the caller keeps this alive while the Rows view is used.
struct Stored {
  std::vector<float> f32;
  std::vector<c10::Half> f16;
  std::vector<c10::BFloat16> bf16;
  Rows view;
};

Stored store(const std::vector<float>& x, int64_t tokens, RowType type) {
  Stored s;
  switch (type) {
    case RowType::F32: s.f32 = x; s.view = Rows(s.f32.data(), RowType::F32, tokens); break;
    case RowType::F16:
      for (float v : x) s.f16.push_back(c10::Half(v));
      s.view = Rows(s.f16.data(), RowType::F16, tokens);
      break;
    case RowType::BF16:
      for (float v : x) s.bf16.push_back(c10::BFloat16(v));
      s.view = Rows(s.bf16.data(), RowType::BF16, tokens);
      break;
  }
  return s;
}

enum class Build { Dispatched, Generic, Avx2, Avx512 };

std::vector<Build> runnable_builds() {
  std::vector<Build> b{Build::Dispatched, Build::Generic};
  if (cpu_runs(KernelIsa::Avx2)) b.push_back(Build::Avx2);
  if (cpu_runs(KernelIsa::Avx512)) b.push_back(Build::Avx512);
  return b;
}

void run(Build b, const float* q, int64_t n_q, int64_t D, const PackedStream& k, const Rows& kf,
         const PackedStream& v, const Rows& vf, float scale, float* out, float* ws) {
  switch (b) {
    case Build::Dispatched:
      if (k.tokens == 0 && v.tokens == 0) full_decode_attention(q, n_q, D, kf, vf, scale, out, ws);
      else packed_decode_attention(q, n_q, D, k, kf, v, vf, scale, out, ws);
      break;
    case Build::Generic: generic::decode_attention_entry(q, n_q, D, k, kf, v, vf, scale, out, ws); break;
    case Build::Avx2: avx2::decode_attention_entry(q, n_q, D, k, kf, v, vf, scale, out, ws); break;
    case Build::Avx512: avx512::decode_attention_entry(q, n_q, D, k, kf, v, vf, scale, out, ws); break;
  }
}

const char* type_name(RowType t) { return t == RowType::F32 ? "f32" : t == RowType::F16 ? "f16" : "bf16"; }

void check_full(RowType type, int64_t n_q, int64_t D, int64_t S, uint32_t seed, Build build) {
  const Stored k = store(test::normal_floats(S * D, seed, 1.5f), S, type), v = store(test::normal_floats(S * D, seed + 1), S, type);
  const std::vector<float> q = test::normal_floats(n_q * D, seed + 2);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::vector<float> out(n_q * D, NAN), want(n_q * D), ws(n_q * S);
  run(build, q.data(), n_q, D, PackedStream{}, k.view, PackedStream{}, v.view, scale, out.data(), ws.data());
  reference::full_decode_attention(q.data(), n_q, D, k.view, v.view, scale, want.data());
  for (int64_t i = 0; i < n_q * D; ++i)
    ASSERT_NEAR(out[i], want[i], 2e-5f * (1.f + std::fabs(want[i])))
        << type_name(type) << " n_q " << n_q << " D " << D << " S " << S << " build " << static_cast<int>(build)
        << " i " << i;
}

TEST(FullAttention, EveryTypeAndBuildMatchesReference) {
  uint32_t seed = 1;
  for (Build b : runnable_builds())
    for (RowType t : {RowType::F32, RowType::F16, RowType::BF16})
      for (int64_t n_q : {1, 3, 4, 8})
        for (int64_t D : {64, 128})
          for (int64_t S : {1, 31, 32, 33, 200}) check_full(t, n_q, D, S, seed++, b);
}

TEST(FullAttention, HeadDimsOffTheVectorPathsMatchReference) {
  // D not a multiple of 32 / 64 / 8 takes the portable loops (and the widening's scalar tail).
  uint32_t seed = 300;
  for (Build b : runnable_builds())
    for (RowType t : {RowType::F16, RowType::BF16, RowType::F32})
      for (int64_t D : {8, 45, 48, 80, 96}) check_full(t, 3, D, 70, seed++, b);
}

TEST(FullAttention, LongContextMatchesReference) {
  check_full(RowType::BF16, 3, 64, 8192, 7, Build::Dispatched);
  check_full(RowType::F16, 1, 128, 4100, 8, Build::Dispatched);
}

TEST(FullAttention, SixteenBitRowsGiveTheWidenedRowsResult) {
  // The kernel reading bf16 rows equals the same kernel reading those rows widened to fp32 bit for
  // bit: widening is exact, so the 16-bit path adds no error of its own.
  const int64_t n_q = 3, D = 64, S = 500;
  const Stored k16 = store(test::normal_floats(S * D, 11), S, RowType::BF16), v16 = store(test::normal_floats(S * D, 12), S, RowType::BF16);
  std::vector<float> k32, v32;
  for (auto x : k16.bf16) k32.push_back(static_cast<float>(x));
  for (auto x : v16.bf16) v32.push_back(static_cast<float>(x));
  const std::vector<float> q = test::normal_floats(n_q * D, 13);
  std::vector<float> a(n_q * D), b(n_q * D), ws(n_q * S);
  full_decode_attention(q.data(), n_q, D, k16.view, v16.view, 0.125f, a.data(), ws.data());
  full_decode_attention(q.data(), n_q, D, Rows(k32.data(), S), Rows(v32.data(), S), 0.125f, b.data(), ws.data());
  EXPECT_EQ(a, b);
}

// KIVI with its exact window stored in the model's 16-bit dtype: packed keys per-channel, packed
// values per-token, then fp16 / bf16 rows, against the reference.
TEST(FullAttention, PackedCacheWithSixteenBitWindowMatchesReference) {
  const int64_t D = 64, n_q = 3, G = 32, S = 300, kp = 256, vp = 172;
  const QuantShape qs{2, G, false};
  const std::vector<float> keys = test::normal_floats(S * D, 21, 1.5f), values = test::normal_floats(S * D, 22), q = test::normal_floats(n_q * D, 23);
  std::vector<uint32_t> kc((kp / G) * D * packed_words(G, 2)), vc(vp * packed_words(D, 2));
  std::vector<c10::Half> ks((kp / G) * D), kz(ks.size()), vs(vp * D / G), vz(vs.size());
  quantize_per_channel<c10::Half>(keys.data(), kp, D, D, qs, kc.data(), ks.data(), kz.data());
  quantize_per_token<c10::Half>(values.data(), vp, D, D, qs, vc.data(), vs.data(), vz.data());
  PackedStream k, v;
  k.granularity = Granularity::PerChannel, v.granularity = Granularity::PerToken;
  k.shape = v.shape = qs;
  k.tokens = kp, k.codes = kc.data(), k.scales = ks.data(), k.zeros = kz.data();
  v.tokens = vp, v.codes = vc.data(), v.scales = vs.data(), v.zeros = vz.data();
  for (RowType t : {RowType::F16, RowType::BF16})
    for (Build b : runnable_builds()) {
      const Stored kf = store({keys.begin() + kp * D, keys.end()}, S - kp, t);
      const Stored vf = store({values.begin() + vp * D, values.end()}, S - vp, t);
      std::vector<float> out(n_q * D), want(n_q * D), ws(n_q * S);
      run(b, q.data(), n_q, D, k, kf.view, v, vf.view, 0.125f, out.data(), ws.data());
      reference::packed_decode_attention(q.data(), n_q, D, k, kf.view, v, vf.view, 0.125f, want.data());
      for (int64_t i = 0; i < n_q * D; ++i)
        ASSERT_NEAR(out[i], want[i], 2e-5f * (1.f + std::fabs(want[i]))) << type_name(t) << " build "
                                                                           << static_cast<int>(b) << " i " << i;
    }
}

TEST(FullAttention, EmptyOrMismatchedRowsAreAnError) {
  std::vector<float> q(64), rows(64 * 3), out(64), ws(8);
  EXPECT_THROW(full_decode_attention(q.data(), 1, 64, Rows(rows.data(), 0), Rows(rows.data(), 0), 1.f, out.data(),
                                     ws.data()),
               Error);
  EXPECT_THROW(full_decode_attention(q.data(), 1, 64, Rows(rows.data(), 3), Rows(rows.data(), 2), 1.f, out.data(),
                                     ws.data()),
               Error);
  EXPECT_THROW(full_decode_attention(q.data(), 1, 64, Rows(nullptr, RowType::BF16, 3), Rows(rows.data(), 3), 1.f,
                                     out.data(), ws.data()),
               Error);
}

}  // namespace
}  // namespace kvlab::kernels
