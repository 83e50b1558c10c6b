// The CPU runtime of 16-bit models and the caches' decode path: a bf16 / fp16 model computes in fp32
// while its K/V reach every cache (and every bytes() figure) in 16 bits; its results equal an fp32
// model with the same 16-bit weights whose K/V are rounded to 16 bits; the full-precision cache's
// decode kernel equals plain attention; appends grow storage geometrically (never a copy of the
// history per token), batched too; fill() stores K/V exactly as a forward would.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/model/attention.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using test::max_abs_diff;

ModelConfig config() {
  ModelConfig c = test::small_config(2);
  c.head_dim = 16, c.hidden_size = 64, c.intermediate_size = 96;
  return c;
}

at::Tensor tokens(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randint(0, vocab, {B, T}, g, at::TensorOptions().dtype(at::kLong));
}

// A full-precision cache that rounds K/V to a 16-bit type and back before storing them: what a
// 16-bit cache holds, inside an fp32 model.
class RoundingCache : public FullPrecisionLayerCache {
 public:
  explicit RoundingCache(at::ScalarType t) : t_(t) {}
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    return FullPrecisionLayerCache::attend(q, k.to(t_).to(k.scalar_type()), v.to(t_).to(v.scalar_type()));
  }

 private:
  at::ScalarType t_;
};

TEST(SixteenBitModel, ComputesInFp32AndCachesSixteenBits) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig c = config();
  for (auto dt : {at::kBFloat16, at::kHalf}) {
    LoadOptions opt;
    opt.dtype = dt;
    LlamaModel m = LlamaModel::random(c, 3, opt, 0.2);
    EXPECT_EQ(m.activation_dtype(), at::kFloat);
    KvCache cache = m.make_full_precision_cache();
    m.forward(tokens(2, 9, c.vocab_size, 1), cache);
    auto& layer = dynamic_cast<FullPrecisionLayerCache&>(cache.layer(1));
    EXPECT_EQ(layer.keys().scalar_type(), dt);
    EXPECT_EQ(layer.values().scalar_type(), dt);
    // layers * batch * kv_heads * tokens * head_dim * 2 bytes, for K and for V
    EXPECT_EQ(cache.bytes().keys.full_precision, 2 * 2 * 2 * 9 * 16 * 2);
    EXPECT_EQ(cache.bytes().total(), 2 * 2 * 2 * 2 * 9 * 16 * 2);
    // A quantized cache's exact part is 16-bit too.
    KvCache kivi = make_cache(MethodRegistry::instance().create("kivi", YAML::Load("{bits: 2, group: 4, residual: 8}"))
                                  ->plan(c),
                              MultiTokenMode::FullPrecision);
    m.forward(tokens(2, 11, c.vocab_size, 2), kivi);
    auto& q = dynamic_cast<QuantizedLayerCache&>(kivi.layer(0));
    EXPECT_EQ(q.keys().full().scalar_type(), dt);
    EXPECT_EQ(q.values().full().scalar_type(), dt);
    EXPECT_EQ(q.values().bytes().full_precision, 2 * 2 * q.values().full_tokens() * 16 * 2);
  }
}

// A bf16 / fp16 model == an fp32 model holding the same (16-bit-valued) weights whose cache rounds
// K/V to 16 bits: the only rounding a 16-bit model adds on the CPU is the stored K/V's. Prefill and
// decode. The two sum their matmuls in different orders (~1e-6), which now and then moves a K/V
// value across a 16-bit rounding boundary; so the check is that the rounding-aware fp32 model is
// close (1e-3 on logits of magnitude ~5) and several times closer than one whose cache keeps fp32.
TEST(SixteenBitModel, EqualsFp32WithRoundedWeightsAndRoundedKv) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig c = config();
  for (auto dt : {at::kBFloat16, at::kHalf}) {
    LoadOptions opt;
    opt.dtype = dt;
    LlamaModel m16 = LlamaModel::random(c, 4, opt, 0.2);
    LlamaModel m32 = LlamaModel::random(c, 4, opt, 0.2);
    auto widen = [](at::Tensor& t) {
      if (t.defined()) t = t.to(at::kFloat);
    };
    ModelWeights& w = m32.weights();
    widen(w.embed), widen(w.final_norm), widen(w.lm_head);
    for (auto& l : w.layers)
      for (at::Tensor* t : {&l.input_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.post_norm, &l.gate_proj,
                            &l.up_proj, &l.down_proj})
        widen(*t);
    ASSERT_EQ(m32.dtype(), at::kFloat);
    const at::Tensor toks = tokens(2, 12, c.vocab_size, 5);
    KvCache c16 = m16.make_full_precision_cache();
    KvCache rounded(c.num_hidden_layers, [&](int64_t) { return std::make_unique<RoundingCache>(dt); });
    KvCache plain = m32.make_full_precision_cache();
    at::Tensor a = m16.forward(toks, c16), b = m32.forward(toks, rounded), f = m32.forward(toks, plain);
    double near = max_abs_diff(a, b), far = max_abs_diff(a, f);
    for (int step = 0; step < 5; ++step) {  // decode: the 16-bit kernel path against fp32 attention
      const at::Tensor next = a.select(1, a.size(1) - 1).argmax(-1).view({2, 1});
      a = m16.forward(next, c16), b = m32.forward(next, rounded), f = m32.forward(next, plain);
      near = std::max(near, max_abs_diff(a, b)), far = std::max(far, max_abs_diff(a, f));
    }
    EXPECT_LT(near, 1e-3) << c10::toString(dt);
    EXPECT_LT(5 * near, far) << c10::toString(dt) << ": the K/V rounding is what differs";
  }
}

// The full-precision cache's decode step (the kernel, reading 16-bit rows in place) equals plain
// attention over the same stored K/V, for every storage dtype, MHA and GQA, batch 3.
TEST(FullPrecisionCache, DecodeKernelEqualsPlainAttention) {
  c10::AutoGradMode no_grad(false);
  at::Generator g = at::detail::createCPUGenerator(11);
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (int64_t hkv : {4, 1}) {
      const int64_t B = 3, Hq = 4, D = 64, T0 = 40;
      FullPrecisionLayerCache cache;
      cache.attend(at::normal(0, 1, {B, Hq, T0, D}, g), at::normal(0, 1, {B, hkv, T0, D}, g).to(dt),
                   at::normal(0, 1, {B, hkv, T0, D}, g).to(dt));
      for (int step = 0; step < 3; ++step) {
        at::Tensor q = at::normal(0, 1, {B, Hq, 1, D}, g);
        at::Tensor k = at::normal(0, 1, {B, hkv, 1, D}, g).to(dt), v = at::normal(0, 1, {B, hkv, 1, D}, g).to(dt);
        at::Tensor got = cache.attend(q, k, v);
        at::Tensor want = causal_gqa_attention(q, cache.keys(), cache.values());
        EXPECT_LT(max_abs_diff(got, want), 1e-5) << c10::toString(dt) << " kv heads " << hkv;
      }
    }
}

// Causal attention in slices of queries (a long prefill: more than 64 MiB of scores) equals the
// textbook computation with every score materialized, GQA and a cached prefix included.
TEST(CausalAttention, SlicesOfQueriesEqualOnePass) {
  c10::AutoGradMode no_grad(false);
  at::Generator g = at::detail::createCPUGenerator(4);
  const int64_t B = 1, Hq = 8, Hkv = 2, T = 1500, S = 1600, D = 16;  // 19M scores: two slices
  at::Tensor q = at::normal(0, 1, {B, Hq, T, D}, g);
  at::Tensor k = at::normal(0, 1, {B, Hkv, S, D}, g).to(at::kBFloat16), v = at::normal(0, 1, {B, Hkv, S, D}, g);
  at::Tensor got = causal_gqa_attention(q, k, v);
  at::Tensor kx = k.to(at::kFloat).repeat_interleave(Hq / Hkv, 1), vx = v.repeat_interleave(Hq / Hkv, 1);
  at::Tensor scores = at::matmul(q, kx.transpose(-1, -2)) / std::sqrt(static_cast<double>(D));  // [B, Hq, T, S]
  at::Tensor mask = at::arange(S).unsqueeze(0) > (at::arange(T).unsqueeze(1) + (S - T));
  at::Tensor want = at::matmul(at::softmax(scores.masked_fill(mask, -INFINITY), -1), vx);
  EXPECT_LT(max_abs_diff(got, want), 1e-5);
}

// The one-pass token-by-token attention of a long window (more than 64 MiB of scores, so it runs in
// slices of queries) equals feeding the tokens one at a time through the streaming cache.
TEST(CausalAttention, TokenByTokenSlicesEqualStreaming) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig c = config();
  const CachePlan plan = MethodRegistry::instance().create("kivi", YAML::Load("{bits: 2, group: 8, residual: 16}"))->plan(c);
  at::Generator g = at::detail::createCPUGenerator(6);
  const int64_t B = 1, Hq = 4, Hkv = 2, D = 16, T = 2100;  // 17.6M scores: two slices
  at::Tensor q = at::normal(0, 1, {B, Hq, T, D}, g);
  at::Tensor k = at::normal(0, 1, {B, Hkv, T, D}, g).to(at::kBFloat16), v = at::normal(0, 1, {B, Hkv, T, D}, g).to(at::kBFloat16);
  QuantizedLayerCache one(plan.layers[0], MultiTokenMode::TokenByToken), stream(plan.layers[0], MultiTokenMode::TokenByToken);
  at::Tensor fast = one.attend(q, k, v);
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < T; ++t) steps.push_back(stream.attend(q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1)));
  EXPECT_LT(max_abs_diff(fast, at::cat(steps, 2)), 1e-5);
  EXPECT_EQ(one.bytes().total(), stream.bytes().total());
}

// Appending token by token reallocates the buffers O(log n) times (capacity doubles), never once
// per token; batched caches too. Capacity changes are the reallocations.
TEST(CacheGrowth, AppendsReallocateLogarithmically) {
  c10::AutoGradMode no_grad(false);
  const int64_t B = 3, H = 2, D = 16, steps = 1500;
  at::Generator g = at::detail::createCPUGenerator(1);
  const ModelConfig c = config();
  for (const std::string& method : {std::string("fp16"), std::string("kivi"), std::string("kvmix")}) {
    YAML::Node params = method == "kivi"    ? YAML::Load("{bits: 2, group: 4, residual: 8}")
                        : method == "kvmix" ? YAML::Load("{bits_from: random, group: 4}")
                                            : YAML::Node();
    const CachePlan plan = MethodRegistry::instance().create(method, params)->plan(c);
    KvCache cache = make_cache(plan, MultiTokenMode::FullPrecision);
    LayerCache& layer = cache.layer(0);
    std::set<int64_t> capacities;
    for (int64_t t = 0; t < steps; ++t) {
      layer.attend(at::normal(0, 1, {B, 4, 1, D}, g), at::normal(0, 1, {B, H, 1, D}, g).to(at::kBFloat16),
                   at::normal(0, 1, {B, H, 1, D}, g).to(at::kBFloat16));
      capacities.insert(layer.capacity_bytes());
    }
    EXPECT_EQ(layer.length(), steps);
    // Per buffer: one capacity per doubling from the first allocation to >= 1500 tokens.
    EXPECT_LE(capacities.size(), 16u) << method;
    // Never far above what is held: at most twice the tokens' storage plus the first allocation.
    EXPECT_LE(layer.capacity_bytes(), 2 * layer.bytes().total() + 64 * B * H * D * 2 * 4) << method;
  }
}

// fill() leaves a cache exactly as a multi-token forward's append + flush would (same bytes, same
// stored values), for the full-precision and the quantized caches; a decode step after it works.
TEST(CacheFill, StoresWhatAForwardWould) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig c = config();
  at::Generator g = at::detail::createCPUGenerator(2);
  const int64_t B = 2, H = 2, D = 16, T = 37;
  at::Tensor q = at::normal(0, 1, {B, 4, T, D}, g);
  at::Tensor k = at::normal(0, 1, {B, H, T, D}, g).to(at::kBFloat16), v = at::normal(0, 1, {B, H, T, D}, g).to(at::kBFloat16);
  for (const auto& [method, params] : std::vector<std::pair<std::string, std::string>>{
           {"fp16", "{}"}, {"kivi", "{bits: 2, group: 4, residual: 8}"}, {"uniform", "{bits: 4, group: 8, window: 5}"}}) {
    const CachePlan plan = MethodRegistry::instance().create(method, YAML::Load(params))->plan(c);
    KvCache filled = make_cache(plan, MultiTokenMode::FullPrecision);
    KvCache forward = make_cache(plan, MultiTokenMode::FullPrecision);
    filled.layer(0).fill(k, v);
    forward.layer(0).attend(q, k, v);
    EXPECT_EQ(filled.layer(0).length(), T);
    EXPECT_EQ(filled.layer(0).bytes().total(), forward.layer(0).bytes().total()) << method;
    at::Tensor q1 = at::normal(0, 1, {B, 4, 1, D}, g), k1 = at::normal(0, 1, {B, H, 1, D}, g).to(at::kBFloat16);
    EXPECT_TRUE(at::equal(filled.layer(0).attend(q1, k1, k1), forward.layer(0).attend(q1, k1, k1))) << method;
  }
}

}  // namespace
}  // namespace kvlab
