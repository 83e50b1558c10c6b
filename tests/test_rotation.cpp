// Rotated KV quantization: the Walsh-Hadamard kernel against its O(n^2) definition (every build),
// R orthonormal, rotate-then-unrotate the identity, the q.k and P.V identities, attention through a
// rotating cache without quantization equal to attention without rotation (layer and model), the
// one-pass and streaming paths still equal with rotation on, what rotation does to an outlier
// channel, the shared `rotate` parameters in every quantizing method, and the calibrated methods
// (KVmix's profile unchanged by rotation, MixKVQ's salience and KVTuner's search on the rotated
// cache, the runner's cached plans keyed by it).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>

#include "../kernels/cpu/hadamard_entries.h"
#include "../kernels/cpu/kernel_entries.h"
#include "../methods/kvtuner/kvtuner_scheme.h"
#include "../methods/mixkvq/channel_stats_cache.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/cache/rotating_layer_cache.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/kernels/hadamard.h"
#include "kvlab/model/attention.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/method_params.h"
#include "kvlab/quant/plan_file.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/sweep.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using test::error_of;
using test::max_abs_diff;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randn(shape, g);
}

std::vector<float> random_floats(int64_t n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> random_signs(int64_t n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = (rng() & 1) ? -1.0f : 1.0f;
  return v;
}

using Entry = void (*)(float*, int64_t, int64_t, const float*, const float*);

std::vector<std::pair<std::string, Entry>> builds_here() {
  std::vector<std::pair<std::string, Entry>> b = {{"generic", kernels::generic::hadamard_rows_entry}};
  if (kernels::cpu_runs(kernels::KernelIsa::Avx2)) b.emplace_back("avx2", kernels::avx2::hadamard_rows_entry);
  if (kernels::cpu_runs(kernels::KernelIsa::Avx512)) b.emplace_back("avx512", kernels::avx512::hadamard_rows_entry);
  return b;
}

// ---- the kernel -----------------------------------------------------------------------------

// Every build equals the definition y_i = post_i / sqrt(n) sum_j (-1)^popcount(i & j) pre_j x_j (to
// float rounding), and the builds agree bit for bit (same operations in the same order).
TEST(Hadamard, EveryBuildMatchesTheDefinition) {
  for (int64_t n : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
    const int64_t rows = 5;
    const std::vector<float> x = random_floats(rows * n, n), pre = random_signs(n, 1), post = random_signs(n, 2);
    for (int variant = 0; variant < 3; ++variant) {
      const float* a = variant == 1 ? pre.data() : nullptr;
      const float* b = variant == 2 ? post.data() : nullptr;
      std::vector<float> want = x;
      kernels::reference::hadamard_rows(want.data(), rows, n, a, b);
      std::vector<float> first;
      for (const auto& [name, entry] : builds_here()) {
        std::vector<float> got = x;
        entry(got.data(), rows, n, a, b);
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 2e-6 * (1 + std::abs(want[i]))) << name << " n=" << n << " at " << i;
        if (first.empty()) first = got;
        else EXPECT_EQ(got, first) << name << " differs from generic, n=" << n;
      }
      std::vector<float> pub = x;  // the public entry (checks, then the build chosen here)
      kernels::hadamard_rows(pub.data(), rows, n, a, b);
      EXPECT_EQ(pub, first) << n;
    }
  }
  // Hand-worked: H_4 (1, 2, 3, 4) / 2 = (10, -2, -4, 0) / 2.
  std::vector<float> x = {1, 2, 3, 4};
  kernels::hadamard_rows(x.data(), 1, 4);
  EXPECT_EQ(x, (std::vector<float>{5, -1, -2, 0}));
}

TEST(Hadamard, LengthsThatAreNotPowersOfTwoAreRefused) {
  std::vector<float> x(12);
  for (int64_t n : {0, 3, 6, 12}) {
    const std::string e = error_of([&] { kernels::hadamard_rows(x.data(), 1, n); }, true);
    EXPECT_NE(e.find(fmt::format("length {} is not a power of two", n)), std::string::npos) << e;
  }
  const std::string e = error_of([] { HeadRotation r(80, 0); }, true);
  EXPECT_NE(e.find("head_dim 80"), std::string::npos) << e;
}

// ---- the rotation R = H diag(s) / sqrt(d) ----------------------------------------------------

// R is orthonormal and equals the Sylvester matrix built here by its recursion; rotate-then-unrotate
// is the identity; the kernel path equals the matrix path (CPU autograd uses the matrix).
TEST(HeadRotation, OrthonormalAndInvertible) {
  for (uint64_t seed : {0ull, 7ull}) {
    for (int64_t d : {8, 64, 128}) {
      HeadRotation r(d, seed);
      const at::Tensor R = r.matrix().to(at::kDouble);
      EXPECT_LT(max_abs_diff(at::matmul(R, R.t()), at::eye(d, at::kDouble)), 1e-6) << d;
      // Sylvester: H_1 = [1], H_2n = [[H, H], [H, -H]].
      at::Tensor H = at::ones({1, 1}, at::kDouble);
      while (H.size(0) < d) H = at::cat({at::cat({H, H}, 1), at::cat({H, -H}, 1)}, 0);
      at::Tensor s = at::ones({d}, at::kDouble);
      for (int64_t i = 0; i < d; ++i) s[i] = r.signs()[static_cast<size_t>(i)];
      if (seed == 0) EXPECT_EQ(s.abs().sum().item<double>(), s.sum().item<double>());  // no signs
      else EXPECT_GT((s < 0).sum().item<int64_t>(), 0);
      const at::Tensor want = at::matmul(H, at::diag(s)) / std::sqrt(static_cast<double>(d));
      EXPECT_LT(max_abs_diff(R, want), 1e-6) << d;

      const at::Tensor x = randn({2, 3, 5, d}, 11);
      const at::Tensor y = r.rotate(x);
      EXPECT_LT(max_abs_diff(r.unrotate(y), x), 1e-6) << d;
      EXPECT_LT(max_abs_diff(r.rotate(r.unrotate(x)), x), 1e-6) << d;
      EXPECT_LT(max_abs_diff(y, at::matmul(x.to(at::kDouble), want.t())), 1e-5) << d;  // rows r -> R r
      {
        at::Tensor xg = x.clone().set_requires_grad(true);  // the matrix path
        EXPECT_LT(max_abs_diff(r.rotate(xg).detach(), y), 1e-5) << d;
        EXPECT_LT(max_abs_diff(r.unrotate(xg).detach(), r.unrotate(x)), 1e-5) << d;
      }
      EXPECT_LT(max_abs_diff(x.norm(2, -1), y.norm(2, -1)), 1e-4) << d;  // lengths kept
    }
  }
  // A different seed, a different (but fixed) sign vector.
  EXPECT_NE(HeadRotation(64, 1).signs(), HeadRotation(64, 2).signs());
  EXPECT_EQ(HeadRotation(64, 1).signs(), HeadRotation(64, 1).signs());
  // Other dtypes come back in their dtype.
  const at::Tensor h = randn({3, 64}, 2).to(at::kBFloat16);
  EXPECT_EQ(HeadRotation(64, 3).rotate(h).scalar_type(), at::kBFloat16);
}

// q.k = (Rq).(Rk) and sum_t p_t v_t = R^T sum_t p_t (R v_t).
TEST(HeadRotation, DotProductAndWeightedSumIdentities) {
  HeadRotation r(64, 5);
  const at::Tensor q = randn({4, 64}, 1), k = randn({9, 64}, 2), v = randn({9, 64}, 3);
  const at::Tensor scores = at::matmul(q, k.t());
  EXPECT_LT(max_abs_diff(at::matmul(r.rotate(q), r.rotate(k).t()), scores), 1e-5);
  const at::Tensor p = at::softmax(scores, -1);
  EXPECT_LT(max_abs_diff(r.unrotate(at::matmul(p, r.rotate(v))), at::matmul(p, v)), 1e-5);
}

// ---- the rotating cache ----------------------------------------------------------------------

RotationSpec both(uint64_t seed = 0) {
  RotationSpec r;
  r.keys = r.values = true;
  r.sign_seed = seed;
  return r;
}

// Without quantization, attention through the rotating cache equals attention without it: a
// 13-token prefill and 6 decode steps, GQA, keys only / values only / both, signs or not.
TEST(RotatingCache, WithoutQuantizationEqualsPlainAttention) {
  c10::AutoGradMode no_grad(false);
  const int64_t B = 2, Hq = 6, Hkv = 2, D = 32, T0 = 13, steps = 6;
  const at::Tensor q = randn({B, Hq, T0 + steps, D}, 1), k = randn({B, Hkv, T0 + steps, D}, 2),
                   v = randn({B, Hkv, T0 + steps, D}, 3);
  for (int which = 0; which < 3; ++which) {
    RotationSpec spec = both(which == 2 ? 9 : 0);
    spec.keys = which != 1;
    spec.values = which != 0;
    RotatingLayerCache rotated(std::make_unique<FullPrecisionLayerCache>(), spec);
    FullPrecisionLayerCache plain;
    EXPECT_LT(max_abs_diff(rotated.attend(q.narrow(2, 0, T0), k.narrow(2, 0, T0), v.narrow(2, 0, T0)),
                           plain.attend(q.narrow(2, 0, T0), k.narrow(2, 0, T0), v.narrow(2, 0, T0))),
              1e-5);
    for (int64_t t = T0; t < T0 + steps; ++t)
      EXPECT_LT(max_abs_diff(rotated.attend(q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1)),
                             plain.attend(q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1))),
                1e-5)
          << "step " << t;
    EXPECT_EQ(rotated.length(), T0 + steps);
    EXPECT_EQ(rotated.bytes().total(), plain.bytes().total());
    // What the inner cache holds is the rotated rows.
    const auto& inner = dynamic_cast<const FullPrecisionLayerCache&>(rotated.inner());
    HeadRotation r(D, spec.sign_seed);
    EXPECT_LT(max_abs_diff(inner.keys(), spec.keys ? r.rotate(k) : k), 1e-6);
    EXPECT_LT(max_abs_diff(inner.values(), spec.values ? r.rotate(v) : v), 1e-6);
  }
}

// The same through a whole model (fp32): logits through rotating full-precision caches equal the
// plain model's, prefill and decode.
TEST(RotatingCache, ModelLogitsUnchangedWithoutQuantization) {
  c10::AutoGradMode no_grad(false);
  ModelConfig c = test::small_config(2);
  c.head_dim = 16, c.hidden_size = 64;
  LlamaModel m = LlamaModel::random(c, 4, {}, 0.2);
  at::Generator g = at::detail::createCPUGenerator(6);
  const at::Tensor ids = at::randint(0, c.vocab_size, {2, 24}, g, at::TensorOptions().dtype(at::kLong));
  KvCache plain = m.make_full_precision_cache();
  KvCache rotated(c.num_hidden_layers, [](int64_t) {
    return std::make_unique<RotatingLayerCache>(std::make_unique<FullPrecisionLayerCache>(), both(3));
  });
  EXPECT_LT(max_abs_diff(m.forward(ids.narrow(1, 0, 20), rotated), m.forward(ids.narrow(1, 0, 20), plain)), 1e-5);
  for (int64_t t = 20; t < 24; ++t)
    EXPECT_LT(max_abs_diff(m.forward(ids.narrow(1, t, 1), rotated), m.forward(ids.narrow(1, t, 1), plain)), 1e-5);
}

CachePlan plan_for(const std::string& method, const std::string& params, const ModelConfig& c) {
  return MethodRegistry::instance().create(method, YAML::Load(params))->plan(c);
}

ModelConfig d16_config() {
  ModelConfig c = test::small_config(2);
  c.head_dim = 16, c.hidden_size = 64;
  return c;
}

// make_cache wraps a layer exactly where its plan rotates a quantized stream; the packed decode
// kernel then reads rotated codes: the output equals R^T attention(Rq, K'_rot, V'_rot) computed
// here from the inner cache's dequantized rows.
TEST(RotatingCache, DecodeReadsRotatedCodes) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig c = d16_config();
  KvCache none = make_cache(plan_for("kivi", "{bits: 2, group: 4, residual: 8}", c), MultiTokenMode::FullPrecision);
  EXPECT_NE(dynamic_cast<QuantizedLayerCache*>(&none.layer(0)), nullptr);  // rotate none: today's cache
  KvCache k16 = make_cache(plan_for("uniform", "{k_bits: 16, v_bits: 16, rotate: both}", c), MultiTokenMode::FullPrecision);
  EXPECT_NE(dynamic_cast<FullPrecisionLayerCache*>(&k16.layer(0)), nullptr);  // nothing quantized: nothing rotated

  KvCache v16 = make_cache(plan_for("uniform", "{k_bits: 2, v_bits: 16, group: 8, rotate: both}", c),
                           MultiTokenMode::FullPrecision);
  auto* vr = dynamic_cast<RotatingLayerCache*>(&v16.layer(0));
  ASSERT_NE(vr, nullptr);
  EXPECT_TRUE(vr->rotation().keys);
  EXPECT_FALSE(vr->rotation().values);  // a 16-bit stream stays as it is

  KvCache cache = make_cache(plan_for("kivi", "{bits: 2, group: 4, residual: 8, rotate: both, rotate_signs: 4}", c),
                             MultiTokenMode::FullPrecision);
  auto* rot = dynamic_cast<RotatingLayerCache*>(&cache.layer(0));
  ASSERT_NE(rot, nullptr);
  auto& inner = dynamic_cast<QuantizedLayerCache&>(rot->inner());
  const int64_t B = 1, Hq = 4, Hkv = 2, D = 16;
  const at::Tensor k = randn({B, Hkv, 30, D}, 2), v = randn({B, Hkv, 30, D}, 3);
  rot->attend(randn({B, Hq, 29, D}, 1), k.narrow(2, 0, 29), v.narrow(2, 0, 29));
  const at::Tensor q = randn({B, Hq, 1, D}, 4);
  const at::Tensor out = rot->attend(q, k.narrow(2, 29, 1), v.narrow(2, 29, 1));
  ASSERT_GT(inner.keys().packed_tokens(), 0);
  ASSERT_GT(inner.values().packed_tokens(), 0);
  HeadRotation r(D, 4);
  auto rows = [](const QuantizedStream& s) { return at::cat({s.dequantized(), s.full().to(at::kFloat)}, 2); };
  const at::Tensor want = r.unrotate(causal_gqa_attention(r.rotate(q), rows(inner.keys()), rows(inner.values())));
  EXPECT_LT(max_abs_diff(out, want), 1e-5);
  // The stored full-precision rows are the rotated ones, and rotation adds no bytes.
  EXPECT_LT(max_abs_diff(inner.values().full(), r.rotate(v).narrow(2, 30 - inner.values().full_tokens(),
                                                                 inner.values().full_tokens())),
            1e-6);
  KvCache plain = make_cache(plan_for("kivi", "{bits: 2, group: 4, residual: 8}", c), MultiTokenMode::FullPrecision);
  plain.layer(0).attend(randn({B, Hq, 29, D}, 1), k.narrow(2, 0, 29), v.narrow(2, 0, 29));
  plain.layer(0).attend(q, k.narrow(2, 29, 1), v.narrow(2, 29, 1));
  EXPECT_EQ(plain.layer(0).bytes().total(), rot->bytes().total());
}

// The synthetic fill of throughput runs stores what a prefill would: rotated K/V through the inner
// cache's quantizer, so the next decode step reads the same codes and rows.
TEST(RotatingCache, SyntheticFillStoresWhatAPrefillStores) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig c = d16_config();
  const CachePlan plan = plan_for("kivi", "{bits: 2, group: 4, residual: 8, rotate: both, rotate_signs: 5}", c);
  KvCache filled = make_cache(plan, MultiTokenMode::FullPrecision);
  KvCache prefilled = make_cache(plan, MultiTokenMode::FullPrecision);
  const int64_t B = 2, Hq = 4, Hkv = 2, D = 16;
  const at::Tensor k = randn({B, Hkv, 30, D}, 12), v = randn({B, Hkv, 30, D}, 13), q = randn({B, Hq, 1, D}, 14);
  filled.layer(0).fill(k.narrow(2, 0, 29), v.narrow(2, 0, 29));
  prefilled.layer(0).attend(randn({B, Hq, 29, D}, 11), k.narrow(2, 0, 29), v.narrow(2, 0, 29));
  auto& fi = dynamic_cast<QuantizedLayerCache&>(dynamic_cast<RotatingLayerCache&>(filled.layer(0)).inner());
  auto& pi = dynamic_cast<QuantizedLayerCache&>(dynamic_cast<RotatingLayerCache&>(prefilled.layer(0)).inner());
  ASSERT_GT(fi.keys().packed_tokens(), 0);
  EXPECT_EQ(fi.keys().packed_tokens(), pi.keys().packed_tokens());
  EXPECT_EQ(max_abs_diff(fi.keys().dequantized(), pi.keys().dequantized()), 0.0);
  EXPECT_EQ(max_abs_diff(fi.values().full(), pi.values().full()), 0.0);
  HeadRotation r(D, 5);  // the stored rows are the rotated ones
  EXPECT_LT(max_abs_diff(fi.values().full(), r.rotate(v).narrow(2, 29 - fi.values().full_tokens(), fi.values().full_tokens())),
            1e-6);
  const at::Tensor a = filled.layer(0).attend(q, k.narrow(2, 29, 1), v.narrow(2, 29, 1));
  const at::Tensor b = prefilled.layer(0).attend(q, k.narrow(2, 29, 1), v.narrow(2, 29, 1));
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
  EXPECT_EQ(filled.layer(0).bytes().total(), prefilled.layer(0).bytes().total());
}

// One-pass (TokenByToken) == token-by-token streaming with rotation on, for the layouts the
// methods use (per-channel keys, per-token values, windows, MixKVQ-style exact channels).
TEST(RotatingCache, OnePassEqualsStreaming) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig c = d16_config();
  const std::vector<std::pair<std::string, std::string>> plans = {
      {"kivi", "{bits: 2, group: 4, residual: 8, rotate: both}"},
      {"kivi", "{bits: 4, group: 8, residual: 0, rotate: keys, rotate_signs: 2}"},
      {"uniform", "{bits: 2, group: 8, window: 5, rotate: values}"},
      {"uniform", "{bits: 3, group: 4, k_axis: per-channel, window: 3, rotate: both, rotate_signs: 1}"}};
  const int64_t B = 2, Hq = 4, Hkv = 2, D = 16, T0 = 7, T = 37;
  const at::Tensor q = randn({B, Hq, T0 + T, D}, 1), k = randn({B, Hkv, T0 + T, D}, 2), v = randn({B, Hkv, T0 + T, D}, 3);
  for (const auto& [method, params] : plans) {
    const CachePlan plan = plan_for(method, params, c);
    KvCache one = make_cache(plan, MultiTokenMode::TokenByToken), stream = make_cache(plan, MultiTokenMode::TokenByToken);
    ASSERT_NE(dynamic_cast<RotatingLayerCache*>(&one.layer(0)), nullptr) << params;
    for (auto* cache : {&one, &stream})
      cache->layer(0).attend(q.narrow(2, 0, T0), k.narrow(2, 0, T0), v.narrow(2, 0, T0));
    const at::Tensor fast = one.layer(0).attend(q.narrow(2, T0, T), k.narrow(2, T0, T), v.narrow(2, T0, T));
    std::vector<at::Tensor> steps;
    for (int64_t t = T0; t < T0 + T; ++t)
      steps.push_back(stream.layer(0).attend(q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1)));
    EXPECT_LT(max_abs_diff(fast, at::cat(steps, 2)), 1e-5) << params;
    EXPECT_EQ(one.layer(0).bytes().total(), stream.layer(0).bytes().total()) << params;
    // ... and the quantization matters.
    EXPECT_GT(max_abs_diff(fast, causal_gqa_attention(q.narrow(2, T0, T), k, v)), 1e-3) << params;
  }
}

// The perplexity paths (--path fast and --path stream) agree with rotation on, through a model.
TEST(RotatingCache, PerplexityFastPathEqualsStream) {
  const ModelConfig c = d16_config();
  LlamaModel m = LlamaModel::random(c, 9, {}, 0.2);
  at::Generator g = at::detail::createCPUGenerator(5);
  at::Tensor t = at::randint(0, c.vocab_size, {3 * 40}, g, at::TensorOptions().dtype(at::kLong));
  std::vector<int32_t> tokens(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  PerplexityOptions opt;
  opt.ctx = 40;
  opt.progress = false;
  for (const auto& [method, params] : std::vector<std::pair<std::string, std::string>>{
           {"uniform", "{bits: 2, group: 8, window: 6, rotate: both, rotate_signs: 3}"},
           {"kivi", "{bits: 2, group: 4, residual: 8, rotate: keys}"}}) {
    const CachePlan plan = plan_for(method, params, c);
    const auto fast = evaluate_quantized_perplexity(m, tokens, opt, plan, PerplexityPath::Fast);
    const auto stream = evaluate_quantized_perplexity(m, tokens, opt, plan, PerplexityPath::Stream);
    EXPECT_NEAR(fast.quantized.ppl(), stream.quantized.ppl(), 1e-4 * stream.quantized.ppl()) << params;
    EXPECT_NEAR(fast.kl_mean, stream.kl_mean, 1e-5) << params;
    EXPECT_GT(fast.kl_mean, 0.0) << params;
    // Rotation costs no bytes: the same bits as the unrotated plan.
    YAML::Node unrotated = YAML::Load(params);
    unrotated.remove("rotate");
    unrotated.remove("rotate_signs");
    const auto base = evaluate_quantized_perplexity(m, tokens, opt, MethodRegistry::instance().create(method, unrotated)->plan(c));
    EXPECT_EQ(fast.bits_k(), base.bits_k()) << params;
    EXPECT_EQ(fast.bits_v(), base.bits_v()) << params;
    EXPECT_NE(fast.kl_mean, base.kl_mean) << params;  // the rotation is really applied
  }
}

// Why rotate: a key channel 30x larger than the rest makes per-token groups coarse; the rotation
// spreads it over the head. 2-bit keys then come back with several times less error (measured in
// the rotated basis, which keeps distances), and attention with them is closer to exact.
TEST(RotatingCache, SpreadsAnOutlierChannel) {
  c10::AutoGradMode no_grad(false);
  const int64_t D = 64, T = 256;
  at::Tensor k = randn({1, 1, T, D}, 1);
  k.select(3, 5).mul_(30);
  const at::Tensor q = randn({1, 1, T, D}, 2), v = randn({1, 1, T, D}, 3);
  ModelConfig c = test::small_config(1);
  c.head_dim = D;
  const at::Tensor exact = causal_gqa_attention(q, k, v);
  KvCache plain = make_cache(plan_for("uniform", "{k_bits: 2, v_bits: 16, group: 64}", c), MultiTokenMode::Quantized);
  KvCache rotated = make_cache(plan_for("uniform", "{k_bits: 2, v_bits: 16, group: 64, rotate: keys}", c),
                               MultiTokenMode::Quantized);
  const double out_plain = (plain.layer(0).attend(q, k, v) - exact).pow(2).mean().item<double>();
  const double out_rot = (rotated.layer(0).attend(q, k, v) - exact).pow(2).mean().item<double>();
  const auto& pk = dynamic_cast<QuantizedLayerCache&>(plain.layer(0)).keys();
  const auto& rk = dynamic_cast<QuantizedLayerCache&>(dynamic_cast<RotatingLayerCache&>(rotated.layer(0)).inner()).keys();
  ASSERT_EQ(pk.packed_tokens(), T);
  ASSERT_EQ(rk.packed_tokens(), T);
  const double k_plain = (pk.dequantized() - k).pow(2).mean().item<double>();
  const double k_rot = (rk.dequantized() - HeadRotation(D, 0).rotate(k)).pow(2).mean().item<double>();
  EXPECT_LT(k_rot, k_plain / 3) << "key MSE plain " << k_plain << " rotated " << k_rot;
  EXPECT_LT(out_rot, out_plain) << "output MSE plain " << out_plain << " rotated " << out_rot;
}

// ---- the shared parameters -------------------------------------------------------------------

TEST(RotateParameter, EveryQuantizingMethodDeclaresIt) {
  auto& reg = MethodRegistry::instance();
  int found = 0;
  for (const auto& name : reg.names()) {
    if (name == "fp16" || name.rfind("test", 0) == 0) continue;  // the reference quantizes nothing
    const auto& params = reg.find(name).params;
    for (const auto& spec : common_params::rotation()) {
      const auto it = std::find_if(params.begin(), params.end(), [&](const ParamSpec& p) { return p.name == spec.name; });
      ASSERT_NE(it, params.end()) << name << " lacks " << spec.name;
      EXPECT_EQ(it->default_value, spec.default_value) << name;
    }
    ++found;
  }
  EXPECT_GE(found, 5);  // uniform, kivi, kvmix, kvtuner, mixkvq
  const ModelConfig c = d16_config();
  // Default: no rotation in any layer (today's plans); set: in every layer.
  for (const auto& l : plan_for("kivi", "{}", c).layers) EXPECT_FALSE(l.rotation.any());
  for (const auto& l : plan_for("kvmix", "{bits_from: random, rotate: values, rotate_signs: 5}", c).layers) {
    EXPECT_FALSE(l.rotation.keys);
    EXPECT_TRUE(l.rotation.values);
    EXPECT_EQ(l.rotation.sign_seed, 5u);
  }
  EXPECT_EQ(plan_for("uniform", "{rotate: both}", c).describe_layer(0),
            "K 4b per-token G32 eager | V 4b per-token G32 eager | rotate K+V (hadamard)");
  // Signs without a rotation would be a distinct cell that computes the same thing.
  std::string e = error_of([&] { plan_for("kivi", "{rotate_signs: 3}", c); }, true);
  EXPECT_NE(e.find("rotate_signs=3 has no effect with rotate=none"), std::string::npos) << e;
  e = error_of([&] { plan_for("kivi", "{rotate: hadamard}", c); }, true);
  EXPECT_NE(e.find("none, keys, values, both"), std::string::npos) << e;
  // A head_dim that is not a power of two: the plan is refused, naming it.
  ModelConfig odd = d16_config();
  odd.head_dim = 24;
  const CachePlan p = plan_for("kivi", "{bits: 2, group: 8, residual: 16, rotate: keys}", odd);
  e = error_of([&] { p.validate(odd.num_hidden_layers, odd.head_dim); }, true);
  EXPECT_NE(e.find("power-of-two head_dim; this model's head_dim is 24"), std::string::npos) << e;
  plan_for("kivi", "{bits: 2, group: 8, residual: 16}", odd).validate(odd.num_hidden_layers, odd.head_dim);
}

// ---- calibrated methods ----------------------------------------------------------------------

// KVmix's importance is the gradient of the loss with respect to k_proj / v_proj under a
// full-precision cache. Rotating q, k, v there changes nothing the loss sees, so the gradients, and
// the profile, are the same: its plan needs no rotated run (and its cache key no rotation).
TEST(RotatedCalibration, KvmixGradientsDoNotDependOnRotation) {
  ModelConfig c = test::small_config(2);
  c.num_hidden_layers = 3;
  c.head_dim = 16, c.hidden_size = 64;
  LlamaModel m = LlamaModel::random(c, 5, {}, 0.2);
  at::Generator g = at::detail::createCPUGenerator(3);
  const at::Tensor ids = at::randint(0, c.vocab_size, {1, 24}, g, at::TensorOptions().dtype(at::kLong));
  auto grads = [&](KvCache cache) {
    std::vector<at::Tensor> w;
    for (auto& l : m.weights().layers) w.push_back(l.k_proj), w.push_back(l.v_proj);
    for (auto& t : w) t.set_requires_grad(true);
    const at::Tensor logits = m.forward(ids, cache).squeeze(0);
    const at::Tensor loss = at::cross_entropy_loss(logits.narrow(0, 0, 23), ids.squeeze(0).narrow(0, 1, 23));
    auto out = torch::autograd::grad({loss}, w);
    for (auto& t : w) t.set_requires_grad(false);
    return out;
  };
  const auto plain = grads(m.make_full_precision_cache());
  const auto rotated = grads(KvCache(c.num_hidden_layers, [](int64_t) {
    return std::make_unique<RotatingLayerCache>(std::make_unique<FullPrecisionLayerCache>(), both(7));
  }));
  ASSERT_EQ(plain.size(), rotated.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    const double n = plain[i].norm().item<double>();
    ASSERT_GT(n, 1e-8);
    EXPECT_LT(std::abs(rotated[i].norm().item<double>() - n) / n, 1e-5) << i;
    EXPECT_LT(max_abs_diff(rotated[i], plain[i]) / n, 1e-5) << i;
  }
  // The profile step has no rotation parameter, so its cached plans are not keyed by one.
  const CalibrationInfo& step = CalibrationRegistry::instance().find("profile", "kvmix");
  for (const auto& p : step.params) EXPECT_NE(p.name.rfind("rotate", 0), 0u) << p.name;
}

// MixKVQ's statistics through a rotating cache are those of the rotated queries and keys.
TEST(RotatedCalibration, MixkvqStatisticsAreOfRotatedChannels) {
  c10::AutoGradMode no_grad(false);
  const at::Tensor q = randn({1, 4, 24, 16}, 1), k = randn({1, 2, 24, 16}, 2), v = randn({1, 2, 24, 16}, 3);
  mixkvq::ChannelStats through(2, 16, 8), direct(2, 16, 8);
  RotatingLayerCache cache(std::make_unique<mixkvq::ChannelStatsLayerCache>(through), both(6));
  cache.attend(q, k, v);
  HeadRotation r(16, 6);
  direct.add_queries(r.rotate(q));
  direct.add_keys(r.rotate(k));
  EXPECT_LT(max_abs_diff(through.relevance(), direct.relevance()), 1e-6);
  EXPECT_LT(max_abs_diff(through.difficulty(mixkvq::Difficulty::Range), direct.difficulty(mixkvq::Difficulty::Range)),
            1e-6);
}

std::string calib_file(const test::TempDir& tmp) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "a b c d e f " + std::to_string(i * 31 % 97) + " the end\n";
  std::ofstream(tmp / "calib.txt") << text;
  return tmp / "calib.txt";
}

// The profile with --rotate records it; the method follows the plan's rotation, and refuses a key
// rotation that differs from the one the channels were chosen in.
TEST(RotatedCalibration, MixkvqPlanCarriesItsRotation) {
  test::TempDir tmp;
  const ModelConfig c = d16_config();
  LlamaModel m = LlamaModel::random(c, 5, {}, 0.2);
  test::FoldTokenizer tok;
  const CalibrationInfo& step = CalibrationRegistry::instance().find("profile", "mixkvq");
  auto profile = [&](const std::string& extra, const std::string& out) {
    const ParamSet p = ParamSet::resolve(
        step.params,
        YAML::Load("{calib: " + calib_file(tmp) + ", samples: 3, max_len: 48, fraction: 0.25, group: 8" + extra + "}"),
        "test");
    CalibrationContext ctx{m, tok, "(random)", p, tmp / out, false};
    return step.run(ctx);
  };
  const std::string rotated = profile(", rotate: keys, rotate_signs: 2", "rot.yaml");
  const std::string plain = profile("", "plain.yaml");
  const PlanFile rf = PlanFile::load(rotated), pf = PlanFile::load(plain);
  EXPECT_EQ(rf.calibration["rotate"].Scalar(), "keys");
  EXPECT_EQ(rf.calibration["rotate_signs"].as<int>(), 2);
  EXPECT_NE(YAML::Dump(rf.layers[0].node["k_salience"]), YAML::Dump(pf.layers[0].node["k_salience"]));

  auto& reg = MethodRegistry::instance();
  const auto method = reg.create("mixkvq", YAML::Load("{plan: " + rotated + ", residual: 16}"));
  EXPECT_EQ(method->params().string("rotate"), "keys");  // followed, and recorded
  const CachePlan cp = method->plan(c);
  EXPECT_TRUE(cp.layers[0].rotation.keys);
  EXPECT_EQ(cp.layers[0].rotation.sign_seed, 2u);
  EXPECT_FALSE(cp.layers[0].k.head_exact_channels.empty());
  // Values may be rotated too (the key basis is the plan's).
  reg.create("mixkvq", YAML::Load("{plan: " + rotated + ", residual: 16, rotate: both, rotate_signs: 2}"))->plan(c);
  std::string e = error_of([&] {
    reg.create("mixkvq", YAML::Load("{plan: " + rotated + ", residual: 16, rotate: none}"))->plan(c);
  }, true);
  EXPECT_NE(e.find("rot.yaml was profiled with rotate=keys rotate_signs=2"), std::string::npos) << e;
  e = error_of([&] {
    reg.create("mixkvq", YAML::Load("{plan: " + plain + ", residual: 16, rotate: keys}"))->plan(c);
  }, true);
  EXPECT_NE(e.find("plain.yaml was profiled with rotate=none"), std::string::npos) << e;
  reg.create("mixkvq", YAML::Load("{plan: " + plain + ", residual: 16, rotate: values}"))->plan(c);
}

// KVTuner's scheme (shared by the search and the method) carries the rotation into every layer it
// plans, so the search measures rotated caches; the method follows the plan's rotation unless set.
TEST(RotatedCalibration, KvtunerSearchesAndRunsTheRotatedScheme) {
  test::TempDir tmp;
  const ModelConfig c = d16_config();
  const ParamSet sp = ParamSet::resolve(kvtuner::Scheme::params(), YAML::Load("{rotate: both, rotate_signs: 4}"), "t");
  const CachePlan searched = kvtuner::Scheme::from(sp).plan({{2, 4}, {16, 16}});
  EXPECT_TRUE(searched.layers[0].rotation == both(4));
  KvCache cache = make_cache(searched, MultiTokenMode::TokenByToken);
  EXPECT_NE(dynamic_cast<RotatingLayerCache*>(&cache.layer(0)), nullptr);
  EXPECT_EQ(dynamic_cast<RotatingLayerCache*>(&cache.layer(1)), nullptr);  // K16V16: nothing to rotate

  std::ofstream(tmp / "p.yaml") << "method: kvtuner\nnum_layers: 2\n"
                                   "calibration: {mode: kivi, group: 8, residual: 16, rotate: keys, rotate_signs: 3}\n"
                                   "layers:\n  - {layer: 0, k_bits: 2, v_bits: 4}\n  - {layer: 1, k_bits: 4, v_bits: 2}\n";
  auto& reg = MethodRegistry::instance();
  const auto followed = reg.create("kvtuner", YAML::Load("{plan: " + (tmp / "p.yaml") + "}"));
  EXPECT_EQ(followed->params().string("rotate"), "keys");
  EXPECT_EQ(followed->params().integer("rotate_signs"), 3);
  RotationSpec keys3;
  keys3.keys = true, keys3.sign_seed = 3;
  EXPECT_TRUE(followed->plan(c).layers[1].rotation == keys3);
  // Setting either rotation parameter takes neither from the plan.
  const auto unset = reg.create("kvtuner", YAML::Load("{plan: " + (tmp / "p.yaml") + ", rotate: none}"));
  EXPECT_FALSE(unset->plan(c).layers[0].rotation.any());
  EXPECT_EQ(unset->params().integer("rotate_signs"), 0);
}

// The runner: a method's rotation flows into its calibration step (so MixKVQ's salience and
// KVTuner's search run rotated), keys the cached plan, and must agree with the calibration's own.
TEST(RotatedCalibration, RunnerKeysCalibratedPlansByRotation) {
  test::TempDir tmp;
  const std::string model = tmp / "tiny";
  const std::string cmd = std::string(KVLAB_BINARY) + " make-model --shape tiny --seed 3 --out " + model + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto grid = [&](const std::string& methods) {
    std::ofstream(tmp / "t.yaml") << "name: t\nmodels:\n  - {name: m, path: " << model << "}\n"
                                  << "tasks:\n  - {name: ppl, params: {text: " << calib_file(tmp) << ", ctx: 32}}\n"
                                  << "store: " << (tmp / "out/t.sqlite") << "\n" << methods;
    return build_grid(ExperimentSpec::load(tmp / "t.yaml"), GridOptions{});
  };
  const Grid g = grid("methods:\n  - {name: mixkvq, sweep: {rotate: [none, keys]}}\n"
                      "  - {name: kvtuner, params: {rotate: both}}\n  - {name: kvmix, sweep: {rotate: [none, both]}}\n");
  ASSERT_EQ(g.cells.size(), 5u);
  const Cell &mix0 = g.cells[0], &mix1 = g.cells[1], &tuner = g.cells[2], &kvmix0 = g.cells[3], &kvmix1 = g.cells[4];
  EXPECT_NE(mix0.calibration_key, mix1.calibration_key);
  EXPECT_EQ(mix1.config["method"]["calibration"]["params"]["rotate"], "keys");
  EXPECT_EQ(mix1.config["method"]["params"]["rotate"], "keys");
  EXPECT_EQ(mix1.calibration_params["rotate"].Scalar(), "keys");
  EXPECT_EQ(mix1.slug, "m/ppl/mixkvq rotate=keys");
  EXPECT_EQ(tuner.config["method"]["calibration"]["params"]["rotate"], "both");
  EXPECT_NE(mix0.id, mix1.id);
  // KVmix: the profile does not depend on the rotation, so both cells share one cached plan.
  EXPECT_EQ(kvmix0.calibration_key, kvmix1.calibration_key);
  EXPECT_NE(kvmix0.id, kvmix1.id);
  const std::string e = error_of([&] {
    grid("methods:\n  - {name: mixkvq, params: {rotate: keys}, calibration: {rotate: none}}\n");
  });
  EXPECT_NE(e.find("'rotate' is keys but its calibration's is none"), std::string::npos) << e;
}

}  // namespace
}  // namespace kvlab
