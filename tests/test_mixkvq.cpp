// MixKVQ: channel statistics against hand-computed loops, the salient channels on keys with
// planted outliers and queries that weight them (and the attention-score error against plain
// per-channel quantization of no fewer bytes), per-head exact channels in the streaming cache, and
// the profile step + method end to end on a small model.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>

#include "../methods/mixkvq/channel_salience.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/cache/quantized_stream.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/plan_file.h"
#include "kvlab/quant/quantizer.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randn(shape, g);
}

using test::error_of;

// Loops over every element: query head h*G+g feeds kv head h; key blocks of 2 tokens (the 5th
// token is a partial block and is left out of the range).
TEST(MixKvqStats, RelevanceAndRangeByHand) {
  const at::Tensor q = randn({2, 4, 3, 2}, 1), k = randn({2, 2, 5, 2}, 2);
  mixkvq::ChannelStats s(2, 2, 2);
  s.add_queries(q);
  s.add_keys(k);
  const at::Tensor rel = s.relevance(), rng = s.difficulty(mixkvq::Difficulty::Range);
  const at::Tensor amax = s.difficulty(mixkvq::Difficulty::AbsMax);
  EXPECT_EQ(s.query_rows(), 2 * 2 * 3);
  EXPECT_EQ(s.key_blocks(), 2 * 2);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t d = 0; d < 2; ++d) {
      double sum = 0;
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t g = 0; g < 2; ++g)
          for (int64_t t = 0; t < 3; ++t) sum += std::abs(q[b][h * 2 + g][t][d].item<double>());
      EXPECT_NEAR(rel[h][d].item<double>(), sum / 12, 1e-12);
      double ranges = 0, mx = 0;
      for (int64_t b = 0; b < 2; ++b) {
        for (int64_t blk = 0; blk < 2; ++blk) {
          const double x0 = k[b][h][2 * blk][d].item<double>(), x1 = k[b][h][2 * blk + 1][d].item<double>();
          ranges += std::abs(x0 - x1);
        }
        for (int64_t t = 0; t < 5; ++t) mx = std::max(mx, std::abs(k[b][h][t][d].item<double>()));
      }
      EXPECT_NEAR(rng[h][d].item<double>(), ranges / 4, 1e-6);
      EXPECT_NEAR(amax[h][d].item<double>(), mx, 1e-6);
    }
  const at::Tensor sal = mixkvq::salience(rel, rng, 2);
  EXPECT_NEAR(sal[1][0].item<double>(), rel[1][0].item<double>() * rng[1][0].item<double>() / 3, 1e-12);
  EXPECT_EQ(mixkvq::exact_count(0.0625, 128), 8);
  EXPECT_EQ(mixkvq::exact_count(0.0625, 8), 1);  // 0.5 rounds up
  EXPECT_EQ(mixkvq::exact_count(0.9, 8), 7);
  EXPECT_EQ(mixkvq::top_channels(at::tensor({1.0, 5.0, 5.0, 2.0}).view({1, 4}), 2),
            (std::vector<std::vector<int64_t>>{{1, 2}}));
}

// Keys [1, 2, T, 16] (fp16, as a real cache holds them): per head two planted outlier channels
// (range x10) that queries weight x3; a distractor channel 7 with the same large range that
// queries ignore (x0.01); channel 1 that queries weight x10 but whose keys barely move (x0.05).
struct Planted {
  at::Tensor q, k;  // [1, 4, Tq, 16] fp32, [1, 2, T, 16] fp16
  std::vector<std::vector<int64_t>> outliers = {{3, 11}, {5, 9}};
};

Planted planted() {
  Planted p;
  const int64_t T = 256, Tq = 64, D = 16;
  at::Tensor k = randn({1, 2, T, D}, 3), q = randn({1, 4, Tq, D}, 4);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t c : p.outliers[static_cast<size_t>(h)]) {
      k.select(1, h).select(2, c).mul_(10);
      for (int64_t g = 0; g < 2; ++g) q.select(1, h * 2 + g).select(2, c).mul_(3);
    }
    k.select(1, h).select(2, 7).mul_(10);
    k.select(1, h).select(2, 1).mul_(0.05);
    for (int64_t g = 0; g < 2; ++g) {
      q.select(1, h * 2 + g).select(2, 7).mul_(0.01);
      q.select(1, h * 2 + g).select(2, 1).mul_(10);
    }
  }
  p.q = q;
  p.k = k.to(at::kHalf);
  return p;
}

// Stores keys per-channel (G 32) in a stream and returns (dequantized keys, bytes held).
std::pair<at::Tensor, int64_t> store(const at::Tensor& k, int bits, std::vector<std::vector<int64_t>> exact = {}) {
  TensorQuantSpec spec;
  spec.bits = bits, spec.group = 32, spec.granularity = Granularity::PerChannel;
  spec.head_exact_channels = std::move(exact);
  QuantizedStream s(spec, FlushRule{});
  s.append(k);
  s.flush();
  EXPECT_EQ(s.packed_tokens(), k.size(2));
  return {s.dequantized(), s.bytes().total()};
}

// RMS error of the attention logits q . k over all (query, key) pairs, GQA-grouped.
double score_error(const at::Tensor& q, const at::Tensor& k, const at::Tensor& k_hat) {
  const at::Tensor qg = q.view({1, 2, 2 * q.size(2), q.size(3)});
  const at::Tensor exact = at::matmul(qg, k.to(at::kFloat).transpose(-1, -2));
  const at::Tensor approx = at::matmul(qg, k_hat.to(at::kFloat).transpose(-1, -2));
  return (exact - approx).pow(2).mean().sqrt().item<double>();
}

TEST(MixKvqSelection, PlantedOutlierChannelsAreSelectedAndScoreErrorDrops) {
  const Planted p = planted();
  mixkvq::ChannelStats s(2, 16, 32);
  s.add_queries(p.q);
  s.add_keys(p.k);
  const at::Tensor sal = mixkvq::salience(s.relevance(), s.difficulty(mixkvq::Difficulty::Range), 2);
  const auto chosen = mixkvq::top_channels(sal, 2);
  EXPECT_EQ(chosen, p.outliers);
  // Difficulty alone would also rank the distractor among the top; relevance alone, channel 1.
  for (const auto& top3 : mixkvq::top_channels(s.difficulty(mixkvq::Difficulty::Range), 3))
    EXPECT_NE(std::find(top3.begin(), top3.end(), 7), top3.end());
  for (const auto& top3 : mixkvq::top_channels(s.relevance(), 3))
    EXPECT_NE(std::find(top3.begin(), top3.end(), 1), top3.end());

  // MixKVQ (2-bit + 2 exact channels per head) against plain per-channel quantization that holds
  // at least as many bytes (4-bit; 3-bit codes pad to the same words): lower logit error.
  const auto [mix, mix_bytes] = store(p.k, 2, chosen);
  const auto [plain4, plain4_bytes] = store(p.k, 4);
  const auto [plain2, plain2_bytes] = store(p.k, 2);
  EXPECT_LE(mix_bytes, plain4_bytes);
  const double e_mix = score_error(p.q, p.k, mix), e4 = score_error(p.q, p.k, plain4);
  const double e2 = score_error(p.q, p.k, plain2);
  EXPECT_LT(e_mix, 0.5 * e4) << "mixkvq " << e_mix << " plain-4 " << e4;
  EXPECT_LT(e4, e2);
  // Keeping the distractor instead of an outlier (a range-only choice) is worse at equal bytes.
  const auto [range_only, range_bytes] = store(p.k, 2, {{3, 7}, {5, 7}});
  EXPECT_EQ(range_bytes, mix_bytes);
  EXPECT_LT(e_mix, 0.5 * score_error(p.q, p.k, range_only));
}

// Per-head exact channels: each head's channels come back bit-exact, the rest are quantized as
// that head's remaining channels alone would be, and the index lists are counted per head.
TEST(MixKvqCache, PerHeadExactChannelsInTheStream) {
  const int64_t B = 2, H = 3, T = 64, D = 16;
  const std::vector<std::vector<int64_t>> exact = {{0, 9}, {4, 15}, {2, 3}};
  TensorQuantSpec spec;
  spec.bits = 2, spec.group = 16, spec.granularity = Granularity::PerChannel;
  spec.head_exact_channels = exact;
  QuantizedStream s(spec, FlushRule{});
  const at::Tensor x = randn({B, H, T, D}, 9);
  s.append(x);
  s.flush();
  const at::Tensor y = s.dequantized();
  for (int64_t h = 0; h < H; ++h) {
    const auto& ex = exact[static_cast<size_t>(h)];
    std::vector<int64_t> rest;
    for (int64_t d = 0; d < D; ++d)
      if (std::find(ex.begin(), ex.end(), d) == ex.end()) rest.push_back(d);
    const at::Tensor ei = at::tensor(ex, at::kLong), ri = at::tensor(rest, at::kLong);
    const at::Tensor xh = x.narrow(1, h, 1), yh = y.narrow(1, h, 1);
    EXPECT_TRUE(at::equal(yh.index_select(3, ei), xh.index_select(3, ei))) << h;
    TensorQuantSpec alone = spec;
    alone.head_exact_channels.clear();
    const at::Tensor want = Quantizer::decode(Quantizer(alone).encode(xh.index_select(3, ri).contiguous()));
    EXPECT_TRUE(at::equal(yh.index_select(3, ri), want)) << h;
  }
  const ByteBreakdown b = s.bytes();
  EXPECT_EQ(b.metadata, H * 2 * 8);                           // one int64 list per head
  EXPECT_EQ(b.full_precision, B * H * T * 2 * 4);             // 2 exact fp32 channels a token
  EXPECT_EQ(b.packed_codes, B * H * (T / 16) * 14 * 1 * 4);   // 14 channels x 1 word per block
  EXPECT_DOUBLE_EQ(spec.nominal_bits(D), (14 * (2 + 32.0 / 16) + 2 * 16.0) / 16);

  // Validation: equal counts per head, not both forms, one list per kv head.
  TensorQuantSpec bad = spec;
  bad.head_exact_channels = {{0, 9}, {4}, {2, 3}};
  EXPECT_NE(error_of([&] { bad.validate(D, "layer 0 keys"); }).find("head 1 has 1 exact channels"), std::string::npos);
  bad.head_exact_channels = {{0, 9}, {9, 0}, {2, 3}};
  EXPECT_NE(error_of([&] { bad.validate(D, "layer 0 keys"); }).find("of head 1"), std::string::npos);
  bad = spec;
  bad.exact_channels = {1};
  EXPECT_NE(error_of([&] { bad.validate(D, "k"); }).find("not both"), std::string::npos);
  QuantizedStream two_heads(spec, FlushRule{});
  EXPECT_NE(error_of([&] { two_heads.append(randn({1, 2, 4, D}, 1)); }).find("3 per-head exact-channel lists for 2"),
            std::string::npos);
}

// A context shorter than the residual: nothing is packed yet, and the one-pass path equals feeding
// tokens one at a time (it used to stop with LibTorch's "Expected size for first two dimensions of
// batch2 tensor": no packed keys came back with the quantized channels' width, not head_dim).
TEST(MixKvqCache, FastPathWithAContextShorterThanTheResidual) {
  const ModelConfig c = test::small_config(2);
  LlamaModel m = LlamaModel::random(c, 5, {}, 0.2);
  CachePlan plan = MethodRegistry::instance().create("kivi", YAML::Load("{bits: 2, group: 8, residual: 32}"))->plan(c);
  for (auto& layer : plan.layers) layer.k.head_exact_channels = {{1, 5}, {0, 7}};
  std::vector<int32_t> ids;
  for (int i = 0; i < 48; ++i) ids.push_back(2 + (i * 7) % 45);
  for (int64_t ctx : {16, 31, 32, 40}) {
    PerplexityOptions opt;
    opt.ctx = ctx;
    opt.max_windows = 1;
    opt.progress = false;
    const auto fast = evaluate_quantized_perplexity(m, ids, opt, plan, PerplexityPath::Fast);
    const auto stream = evaluate_quantized_perplexity(m, ids, opt, plan, PerplexityPath::Stream);
    EXPECT_NEAR(fast.quantized.nll_sum, stream.quantized.nll_sum, 1e-4 * std::abs(stream.quantized.nll_sum)) << ctx;
    EXPECT_NEAR(fast.kl_mean, stream.kl_mean, 1e-6) << ctx;
    EXPECT_EQ(fast.bytes.total(), stream.bytes.total()) << ctx;
    if (ctx < 32) EXPECT_EQ(fast.bytes.keys.packed_codes, 0) << ctx;  // nothing packed: the same as fp16
    if (ctx < 32) EXPECT_NEAR(fast.kl_mean, 0.0, 1e-9) << ctx;
  }
}

// Salience values are ranked: NaN (which breaks the ordering) and inf are refused, naming the file,
// the key and the position.
TEST(MixKvqCache, NonFiniteSalienceIsRefused) {
  const ModelConfig c = test::small_config(2);  // 2 layers, 2 kv heads of 8 channels
  test::TempDir tmp;
  auto plan_with = [&](const std::string& value) {
    const std::string ok = "[1, 2, 3, 4, 5, 6, 7, 8]";
    std::ofstream(tmp / "plan.yaml") << "method: mixkvq\nnum_layers: 2\nlayers:\n"
                                     << "  - {layer: 0, k_bits: 2, v_bits: 2, k_salience: [" << ok << ", " << ok << "]}\n"
                                     << "  - {layer: 1, k_bits: 2, v_bits: 2, k_salience: [" << ok
                                     << ", [1, 2, 3, " << value << ", 5, 6, 7, 8]]}\n";
    return MethodRegistry::instance().create("mixkvq",
                                             YAML::Load("{plan: " + (tmp / "plan.yaml") + ", fraction: 0.25, group: 8}"));
  };
  const CachePlan good = plan_with("4")->plan(c);
  EXPECT_EQ(good.layers[1].k.head_exact_channels[1], (std::vector<int64_t>{6, 7}));
  for (const char* bad : {".nan", ".inf", "-.inf"}) {
    const std::string e = error_of([&] { plan_with(bad)->plan(c); });
    EXPECT_NE(e.find("plan.yaml: layers[1].k_salience[1][3]"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("not a finite number"), std::string::npos) << bad << ": " << e;
  }
}

using test::FoldTokenizer;

// Profile -> plan file -> method -> cache, on a small random GQA model (2 kv heads of 8 channels).
TEST(MixKvqProfile, EndToEndOnASmallModel) {
  test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "a b c d e f " + std::to_string(i * 31 % 97) + " the end\n";
  std::ofstream(tmp / "calib.txt") << text;
  ModelConfig c = test::small_config(2);
  LlamaModel m = LlamaModel::random(c, 5, {}, 0.2);
  FoldTokenizer tok;
  const CalibrationInfo& step = CalibrationRegistry::instance().find("profile", "mixkvq");
  const ParamSet p = ParamSet::resolve(
      step.params, YAML::Load("{calib: " + (tmp / "calib.txt") + ", samples: 3, max_len: 48, fraction: 0.25, group: 8}"),
      "test");
  CalibrationContext ctx{m, tok, "(random)", p, tmp / "plan.yaml", false};
  ASSERT_EQ(step.run(ctx), tmp / "plan.yaml");

  const PlanFile plan = PlanFile::load(tmp / "plan.yaml");
  plan.check("mixkvq", 2);
  for (size_t l = 0; l < 2; ++l) {
    const YAML::Node n = plan.layers[l].node;
    ASSERT_EQ(n["k_exact_channels"].size(), 2u);
    for (size_t h = 0; h < 2; ++h) {
      const auto chosen = n["k_exact_channels"][h].as<std::vector<int64_t>>();
      const auto rel = n["q_relevance"][h].as<std::vector<double>>();
      const auto dif = n["k_difficulty"][h].as<std::vector<double>>();
      const auto sal = n["k_salience"][h].as<std::vector<double>>();
      ASSERT_EQ(chosen.size(), 2u);  // 0.25 of 8 channels
      ASSERT_EQ(sal.size(), 8u);
      for (size_t d = 0; d < 8; ++d) {
        EXPECT_NEAR(sal[d], rel[d] * dif[d] / 3, 1e-5 * sal[d]);
        EXPECT_GT(rel[d], 0.0);
      }
      // The chosen channels are the two most salient.
      for (size_t d = 0; d < 8; ++d) {
        if (std::find(chosen.begin(), chosen.end(), static_cast<int64_t>(d)) != chosen.end()) continue;
        for (int64_t e : chosen) EXPECT_GE(sal[static_cast<size_t>(e)], sal[d]);
      }
    }
  }

  auto& reg = MethodRegistry::instance();
  const CachePlan cp = reg.create("mixkvq", YAML::Load("{plan: " + (tmp / "plan.yaml") + ", residual: 16}"))->plan(c);
  ASSERT_EQ(cp.layers.size(), 2u);
  EXPECT_EQ(cp.layers[0].k.group, 8);  // the plan's group, also in the resolved parameters
  EXPECT_EQ(reg.create("mixkvq", YAML::Load("{plan: " + (tmp / "plan.yaml") + "}"))->params().integer("group"), 8);
  EXPECT_EQ(cp.layers[0].k.bits, 2);
  EXPECT_EQ(cp.layers[0].k.head_exact_channels,
            plan.layers[0].node["k_exact_channels"].as<std::vector<std::vector<int64_t>>>());
  // Re-selecting the same fraction from the stored salience gives the same channels; a larger
  // fraction, more.
  const CachePlan again =
      reg.create("mixkvq", YAML::Load("{plan: " + (tmp / "plan.yaml") + ", fraction: 0.25, residual: 16}"))->plan(c);
  EXPECT_EQ(again.layers[1].k.head_exact_channels, cp.layers[1].k.head_exact_channels);
  const CachePlan more =
      reg.create("mixkvq", YAML::Load("{plan: " + (tmp / "plan.yaml") + ", fraction: 0.5, residual: 16}"))->plan(c);
  EXPECT_EQ(more.layers[1].k.head_exact_channels[0].size(), 4u);

  // The one-pass perplexity path equals feeding tokens one at a time, with per-head exact channels.
  PerplexityOptions opt;
  opt.ctx = 40;
  opt.max_windows = 2;
  opt.progress = false;
  const auto ids = tok.encode(text, false);
  const auto fast = evaluate_quantized_perplexity(m, ids, opt, cp, PerplexityPath::Fast);
  const auto stream = evaluate_quantized_perplexity(m, ids, opt, cp, PerplexityPath::Stream);
  EXPECT_NEAR(fast.quantized.ppl(), stream.quantized.ppl(), 1e-4 * stream.quantized.ppl());
  EXPECT_NEAR(fast.kl_mean, stream.kl_mean, 1e-5);
  EXPECT_GT(fast.kl_mean, 0.0);
  // The channel lists are in the bytes: 2 layers x 2 heads x 2 ids x 8 bytes.
  EXPECT_EQ(fast.bytes.keys.metadata, 2 * 2 * 2 * 8);

  // With no exact channels MixKVQ is KIVI (same G, R, bits): the same numbers exactly.
  const CachePlan none =
      reg.create("mixkvq", YAML::Load("{plan: " + (tmp / "plan.yaml") + ", fraction: 0, residual: 16}"))->plan(c);
  const CachePlan kivi = reg.create("kivi", YAML::Load("{bits: 2, group: 8, residual: 16}"))->plan(c);
  const auto a = evaluate_quantized_perplexity(m, ids, opt, none), b = evaluate_quantized_perplexity(m, ids, opt, kivi);
  EXPECT_EQ(a.kl_mean, b.kl_mean);
  EXPECT_EQ(a.quantized.nll_sum, b.quantized.nll_sum);
  EXPECT_EQ(a.bytes.total(), b.bytes.total());
  EXPECT_LT(fast.kl_mean, a.kl_mean);  // 2 of 8 key channels exact: less drift than none

  // A hand-edited plan with the wrong number of head lists names the file and the key.
  std::ifstream in(tmp / "plan.yaml");
  std::string body((std::istreambuf_iterator<char>(in)), {});
  const size_t at = body.find("k_exact_channels: [[");
  ASSERT_NE(at, std::string::npos);
  body.replace(at, 20, "k_exact_channels: [[0], [");
  std::ofstream(tmp / "bad.yaml") << body;
  const std::string e = error_of([&] { reg.create("mixkvq", YAML::Load("{plan: " + (tmp / "bad.yaml") + "}"))->plan(c); });
  EXPECT_NE(e.find("bad.yaml: layers[0].k_exact_channels"), std::string::npos) << e;
}

}  // namespace
}  // namespace kvlab
