// The streaming quantized cache: flush rules worked by hand, exact byte accounting against the
// formula of METHODS.md, decode attention against an independent dequantize-then-attend, and
// token-by-token semantics of the one-pass (masked) path.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/model/attention.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/quantizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

FlushRule rule(FlushRule::Kind kind, int64_t window = 0, double ratio = 0, int64_t unit = 0) {
  FlushRule r;
  r.kind = kind, r.window = window, r.ratio = ratio, r.unit = unit;
  return r;
}

TEST(FlushRule, HandWorkedCounts) {
  // Eager: whole units only.
  EXPECT_EQ(rule(FlushRule::Kind::Eager).tokens_to_flush(7, 1), 7);
  EXPECT_EQ(rule(FlushRule::Kind::Eager).tokens_to_flush(7, 4), 4);
  // Recent(R=4): keep at least 4 exact.
  EXPECT_EQ(rule(FlushRule::Kind::Recent, 4).tokens_to_flush(3, 1), 0);
  EXPECT_EQ(rule(FlushRule::Kind::Recent, 4).tokens_to_flush(5, 1), 1);
  EXPECT_EQ(rule(FlushRule::Kind::Recent, 4).tokens_to_flush(11, 2), 6);
  // Block(R=4): KIVI keys; all of R at once.
  EXPECT_EQ(rule(FlushRule::Kind::Block, 4).tokens_to_flush(3, 2), 0);
  EXPECT_EQ(rule(FlushRule::Kind::Block, 4).tokens_to_flush(4, 2), 4);
  EXPECT_EQ(rule(FlushRule::Kind::Block, 4).tokens_to_flush(10, 2), 8);
  // Ratio(r=0.2, unit 4): n = 100 -> keep 20, move floor(80/4)*4 = 80; n = 23 -> keep 4, move 16.
  EXPECT_EQ(rule(FlushRule::Kind::Ratio, 0, 0.2, 4).tokens_to_flush(100, 1), 80);
  EXPECT_EQ(rule(FlushRule::Kind::Ratio, 0, 0.2, 4).tokens_to_flush(23, 1), 16);
  EXPECT_EQ(rule(FlushRule::Kind::Ratio, 0, 0.2, 4).tokens_to_flush(4, 1), 4);  // keep floor(0.8)=0
  EXPECT_EQ(rule(FlushRule::Kind::Never).tokens_to_flush(100, 1), 0);
}

LayerPlan kivi_layer(int bits, int64_t G, int64_t R) {
  YAML::Node p;
  p["bits"] = bits, p["group"] = G, p["residual"] = R;
  ModelConfig c = test::small_config();
  return MethodRegistry::instance().create("kivi", p)->plan(c).layers[0];
}

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randn(shape, g);
}

// KIVI with R = 4, G = 2. Prefill 10 tokens: keys pack 10 - 10 mod 4 = 8 (2 exact), values pack
// 10 - 4 = 6 (4 exact). Then per decode step (keys gather to 4 then pack all 4; values keep 4):
//   step 1: keys 8 + 3 exact,  values 7 + 4
//   step 2: keys 12 + 0 exact, values 8 + 4
//   step 3: keys 12 + 1,       values 9 + 4
TEST(QuantizedCache, KiviStreamingHandWorked) {
  QuantizedLayerCache cache(kivi_layer(2, 2, 4), MultiTokenMode::FullPrecision);
  const int64_t B = 2, H = 2, D = 8;
  auto step = [&](int64_t T, uint64_t seed) {
    cache.attend(randn({B, 4, T, D}, seed), randn({B, H, T, D}, seed + 1), randn({B, H, T, D}, seed + 2));
  };
  step(10, 1);
  EXPECT_EQ(cache.keys().packed_tokens(), 8);
  EXPECT_EQ(cache.keys().full_tokens(), 2);
  EXPECT_EQ(cache.values().packed_tokens(), 6);
  EXPECT_EQ(cache.values().full_tokens(), 4);
  const int64_t want[][4] = {{8, 3, 7, 4}, {12, 0, 8, 4}, {12, 1, 9, 4}};
  for (int s = 0; s < 3; ++s) {
    step(1, 10 + s);
    EXPECT_EQ(cache.keys().packed_tokens(), want[s][0]) << "step " << s + 1;
    EXPECT_EQ(cache.keys().full_tokens(), want[s][1]) << "step " << s + 1;
    EXPECT_EQ(cache.values().packed_tokens(), want[s][2]) << "step " << s + 1;
    EXPECT_EQ(cache.values().full_tokens(), want[s][3]) << "step " << s + 1;
  }
  EXPECT_EQ(cache.length(), 13);
}

// Bytes against METHODS.md's formula: per quantized element b + 2 * 16 / G bits (fp16 scale and
// zero), full-precision tokens at the dtype's width. Codes are stored in whole 32-bit words per row
// (a token's D codes, or a channel's G codes of a block): 32, 16, 10, 8, 4 codes a word for
// b = 1, 2, 3, 4, 8, so a row that does not fill its last word pays for the padding.
TEST(QuantizedCache, BytesMatchTheAccountingFormula) {
  const int64_t B = 2, H = 3, D = 32, G = 16;
  const std::map<int, int64_t> codes_per_word = {{1, 32}, {2, 16}, {3, 10}, {4, 8}, {8, 4}};
  for (int bits : {1, 2, 3, 4, 8}) {
    YAML::Node p;
    p["bits"] = bits, p["group"] = G, p["residual"] = 16;
    ModelConfig c = test::small_config();
    LayerPlan lp = MethodRegistry::instance().create("kivi", p)->plan(c).layers[0];
    QuantizedLayerCache cache(lp, MultiTokenMode::FullPrecision);
    cache.attend(randn({B, H, 40, D}, 3), randn({B, H, 40, D}, 4), randn({B, H, 40, D}, 5));
    // Keys: 32 packed (2 blocks of 16), 8 exact. Values: 24 packed, 16 exact.
    ASSERT_EQ(cache.keys().packed_tokens(), 32);
    ASSERT_EQ(cache.values().packed_tokens(), 24);
    const int64_t cpw = codes_per_word.at(bits);
    const int64_t key_row_words = (G + cpw - 1) / cpw;    // one channel of one block
    const int64_t value_row_words = (D + cpw - 1) / cpw;  // one token
    const CacheBytes b = cache.bytes();
    EXPECT_EQ(b.keys.packed_codes, B * H * (32 / G) * D * key_row_words * 4) << bits;
    EXPECT_EQ(b.keys.scales_zeros, B * H * (32 / G) * D * 2 * 2);
    EXPECT_EQ(b.keys.full_precision, B * H * 8 * D * 4);
    EXPECT_EQ(b.values.packed_codes, B * H * 24 * value_row_words * 4) << bits;
    EXPECT_EQ(b.values.scales_zeros, B * H * 24 * (D / G) * 2 * 2);
    EXPECT_EQ(b.values.full_precision, B * H * 16 * D * 4);
    // Where rows fill their words exactly, the formula b + 32/G bits per element holds as written.
    if (D % cpw == 0) {
      const double per_elem = 8.0 * (b.values.packed_codes + b.values.scales_zeros) / (B * H * 24 * D);
      EXPECT_DOUBLE_EQ(per_elem, bits + 32.0 / G);
    }
  }
}

// Decode attention through the cache (the packed kernel) == plain attention over the dequantized
// packed part followed by the exact part, for KIVI and a per-token uniform plan, GQA; and with
// exact channels (MixKVQ's layout): shared or per-head lists, on keys, values or both.
TEST(QuantizedCache, DecodeAttentionEqualsDequantizedReference) {
  const int64_t B = 2, Hkv = 2, Hq = 4, D = 16;
  std::vector<LayerPlan> plans = {kivi_layer(2, 4, 8), kivi_layer(4, 4, 0)};
  {
    YAML::Node p;
    p["bits"] = 3, p["group"] = 8, p["window"] = 5;
    plans.push_back(MethodRegistry::instance().create("uniform", p)->plan(test::small_config()).layers[0]);
  }
  plans.push_back(kivi_layer(2, 4, 8));
  plans.back().k.exact_channels = {3, 9};
  plans.push_back(kivi_layer(4, 4, 0));
  plans.back().k.head_exact_channels = {{1, 5}, {2, 12}};
  plans.back().v.exact_channels = {0, 7, 8, 15};
  for (size_t i = 0; i < plans.size(); ++i) {
    QuantizedLayerCache cache(plans[i], MultiTokenMode::FullPrecision);
    cache.attend(randn({B, Hq, 21, D}, 1), randn({B, Hkv, 21, D}, 2), randn({B, Hkv, 21, D}, 3));
    for (int step = 0; step < 6; ++step) {
      at::Tensor q = randn({B, Hq, 1, D}, 10 + step);
      at::Tensor out = cache.attend(q, randn({B, Hkv, 1, D}, 20 + step), randn({B, Hkv, 1, D}, 30 + step));
      at::Tensor keys = at::cat({cache.keys().dequantized(), cache.keys().full()}, 2);
      at::Tensor values = at::cat({cache.values().dequantized(), cache.values().full()}, 2);
      at::Tensor want = causal_gqa_attention(q, keys, values);
      EXPECT_LT(test::max_abs_diff(out, want), 1e-5) << "plan " << i << " step " << step;
    }
  }
}

TEST(QuantizedCache, NanInKeysIsRejected) {
  QuantizedLayerCache cache(kivi_layer(2, 2, 0), MultiTokenMode::FullPrecision);
  at::Tensor k = randn({1, 2, 4, 8}, 1);
  k[0][1][2][3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(cache.attend(randn({1, 2, 4, 8}, 2), k, randn({1, 2, 4, 8}, 3)), Error);
}

// The one-pass TokenByToken mode == feeding the same K/V one token at a time, for several plans
// including windows and ratio rules, after a prefix that is already cached. Same inputs, so the
// same codes: only the attention arithmetic differs. (Through a model the two paths compute K/V
// with different matmul shapes; a value on a rounding boundary can then flip one code, so the
// model-level check is the perplexity test below.)
class TokenByTokenTest : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

CachePlan plan_for(const std::string& method, const std::string& params, const ModelConfig& c) {
  return MethodRegistry::instance().create(method, YAML::Load(params))->plan(c);
}

TEST_P(TokenByTokenTest, OnePassEqualsStreaming) {
  c10::AutoGradMode no_grad(false);
  ModelConfig c = test::small_config(2);
  c.head_dim = 16, c.hidden_size = 64;
  const CachePlan plan = plan_for(GetParam().first, GetParam().second, c);
  const int64_t B = 2, Hq = 4, Hkv = 2, D = 16, T0 = 7, T = 37;
  at::Tensor q = randn({B, Hq, T0 + T, D}, 1), k = randn({B, Hkv, T0 + T, D}, 2), v = randn({B, Hkv, T0 + T, D}, 3);
  QuantizedLayerCache one(plan.layers[0], MultiTokenMode::TokenByToken);
  QuantizedLayerCache stream(plan.layers[0], MultiTokenMode::TokenByToken);
  for (auto* cache : {&one, &stream}) cache->attend(q.narrow(2, 0, T0), k.narrow(2, 0, T0), v.narrow(2, 0, T0));
  at::Tensor fast = one.attend(q.narrow(2, T0, T), k.narrow(2, T0, T), v.narrow(2, T0, T));
  std::vector<at::Tensor> steps;
  for (int64_t t = T0; t < T0 + T; ++t)
    steps.push_back(stream.attend(q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1)));
  EXPECT_LT(test::max_abs_diff(fast, at::cat(steps, 2)), 1e-5);
  EXPECT_EQ(one.keys().packed_tokens(), stream.keys().packed_tokens());
  EXPECT_EQ(one.values().packed_tokens(), stream.values().packed_tokens());
  EXPECT_EQ(one.bytes().total(), stream.bytes().total());
  if (one.keys().packed_tokens() > 0) {
    EXPECT_TRUE(at::equal(one.keys().dequantized(), stream.keys().dequantized()));
  }
  // And the quantization matters: exact attention over the same tokens differs visibly.
  at::Tensor exact = causal_gqa_attention(q.narrow(2, T0, T), k, v);
  EXPECT_GT(test::max_abs_diff(fast, exact), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(
    Plans, TokenByTokenTest,
    ::testing::Values(std::make_pair("kivi", "{bits: 2, group: 4, residual: 8}"),
                      std::make_pair("kivi", "{bits: 3, group: 8, residual: 0}"),
                      std::make_pair("uniform", "{bits: 2, group: 8, window: 5}"),
                      std::make_pair("uniform", "{bits: 4, group: 4, k_axis: per-channel, window: 3}"),
                      std::make_pair("uniform", "{k_bits: 2, v_bits: 16, group: 16}")));

// The perplexity paths: fast == stream to 1e-4; fp16 through the quantized evaluator == the plain
// full-precision perplexity; fewer bits, more error.
TEST(QuantizedPerplexity, FastPathEqualsStreamAndFp16IsExact) {
  ModelConfig c = test::small_config(2);
  c.head_dim = 16, c.hidden_size = 64;
  LlamaModel m = LlamaModel::random(c, 9, {}, 0.2);
  at::Generator g = at::detail::createCPUGenerator(5);
  at::Tensor t = at::randint(0, c.vocab_size, {3 * 40}, g, at::TensorOptions().dtype(at::kLong));
  std::vector<int32_t> tokens(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  PerplexityOptions opt;
  opt.ctx = 40;
  opt.progress = false;
  for (const auto& [method, params] : std::vector<std::pair<std::string, std::string>>{
           {"uniform", "{bits: 2, group: 8, window: 6}"}, {"kivi", "{bits: 2, group: 4, residual: 8}"}}) {
    const CachePlan plan = plan_for(method, params, c);
    auto fast = evaluate_quantized_perplexity(m, tokens, opt, plan, PerplexityPath::Fast);
    auto stream = evaluate_quantized_perplexity(m, tokens, opt, plan, PerplexityPath::Stream);
    EXPECT_NEAR(fast.quantized.ppl(), stream.quantized.ppl(), 1e-4 * stream.quantized.ppl()) << method;
    EXPECT_NEAR(fast.kl_mean, stream.kl_mean, 1e-5) << method;
    EXPECT_GT(fast.kl_mean, 0.0) << method;
  }
  const PerplexityResult plain = evaluate_perplexity(m, tokens, opt);
  auto fp = evaluate_quantized_perplexity(m, tokens, opt, plan_for("fp16", "{}", c), PerplexityPath::Fast);
  EXPECT_DOUBLE_EQ(fp.quantized.ppl(), plain.ppl());
  EXPECT_DOUBLE_EQ(fp.reference.ppl(), plain.ppl());
  EXPECT_EQ(fp.kl_mean, 0.0);
  EXPECT_DOUBLE_EQ(fp.memory_ratio(), 2.0);  // an fp32 model's cache is twice a 16-bit one
  auto q4 = evaluate_quantized_perplexity(m, tokens, opt, plan_for("uniform", "{bits: 4, group: 16}", c));
  auto q2 = evaluate_quantized_perplexity(m, tokens, opt, plan_for("uniform", "{bits: 2, group: 16}", c));
  EXPECT_LT(q4.kl_mean, q2.kl_mean);
  EXPECT_DOUBLE_EQ(q4.bits_k(), 4 + 32.0 / 16);
  EXPECT_DOUBLE_EQ(q2.bits_v(), 2 + 32.0 / 16);
}


// Exact (high-precision) channels: they come back bit-exact, the other channels are quantized
// exactly as a tensor of only those channels would be, and the bytes count both parts.
TEST(QuantizedCache, ExactChannelsStayExactAndTheRestIsQuantizedAlone) {
  const int64_t B = 1, H = 2, T = 40, D = 36;
  TensorQuantSpec spec;
  spec.bits = 2, spec.group = 16, spec.granularity = Granularity::PerToken;
  spec.exact_channels = {3, 17, 30, 35};  // 32 quantized channels remain
  QuantizedStream s(spec, FlushRule{});
  const at::Tensor x = randn({B, H, T, D}, 7);
  s.append(x);
  s.flush();
  ASSERT_EQ(s.packed_tokens(), T);
  const at::Tensor y = s.dequantized();
  const at::Tensor exact_idx = at::tensor(spec.exact_channels, at::kLong);
  EXPECT_TRUE(at::equal(y.index_select(3, exact_idx), x.index_select(3, exact_idx)));
  std::vector<int64_t> rest;
  for (int64_t d = 0; d < D; ++d)
    if (std::find(spec.exact_channels.begin(), spec.exact_channels.end(), d) == spec.exact_channels.end())
      rest.push_back(d);
  const at::Tensor rest_idx = at::tensor(rest, at::kLong);
  TensorQuantSpec alone = spec;
  alone.exact_channels.clear();
  const at::Tensor want = Quantizer::decode(Quantizer(alone).encode(x.index_select(3, rest_idx)));
  EXPECT_TRUE(at::equal(y.index_select(3, rest_idx), want));
  const ByteBreakdown b = s.bytes();
  EXPECT_EQ(b.packed_codes, B * H * T * (32 / 16) * 4);         // 32 codes of 2 bits: 2 words a token
  EXPECT_EQ(b.scales_zeros, B * H * T * (32 / 16) * 2 * 2);
  EXPECT_EQ(b.full_precision, B * H * T * 4 * 4);                // 4 exact fp32 channels a token
  EXPECT_EQ(b.metadata, 4 * 8);
  // Nominal bits: (32 * (2 + 32/16) + 4 * 16) / 36.
  EXPECT_DOUBLE_EQ(spec.nominal_bits(D), (32 * 4.0 + 4 * 16.0) / 36);
}

TEST(QuantizedCache, ExactChannelsInDecodeAttention) {
  LayerPlan lp = kivi_layer(2, 4, 4);
  lp.k.exact_channels = {0, 5};
  lp.v.exact_channels = {7};
  lp.v.group = 5;  // 15 quantized value channels
  QuantizedLayerCache cache(lp, MultiTokenMode::FullPrecision);
  const int64_t B = 1, Hkv = 2, Hq = 4, D = 16;
  cache.attend(randn({B, Hq, 13, D}, 1), randn({B, Hkv, 13, D}, 2), randn({B, Hkv, 13, D}, 3));
  at::Tensor q = randn({B, Hq, 1, D}, 4);
  at::Tensor out = cache.attend(q, randn({B, Hkv, 1, D}, 5), randn({B, Hkv, 1, D}, 6));
  at::Tensor keys = at::cat({cache.keys().dequantized(), cache.keys().full()}, 2);
  at::Tensor values = at::cat({cache.values().dequantized(), cache.values().full()}, 2);
  EXPECT_LT(test::max_abs_diff(out, causal_gqa_attention(q, keys, values)), 1e-5);
}

TEST(QuantizedCache, BadExactChannelSetsAreErrors) {
  TensorQuantSpec spec;
  spec.bits = 2, spec.group = 8;
  spec.exact_channels = {3, 3};
  EXPECT_THROW(spec.validate(16, "test"), Error);
  spec.exact_channels = {16};
  EXPECT_THROW(spec.validate(16, "test"), Error);
  spec.exact_channels = {1, 2};  // 14 quantized channels: group 8 does not divide
  EXPECT_THROW(spec.validate(16, "test"), Error);
  spec.group = 7;
  EXPECT_NO_THROW(spec.validate(16, "test"));
}

}  // namespace
}  // namespace kvlab
