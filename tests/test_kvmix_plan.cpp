// KVmix plan files and the kvmix method: the file round-trips, malformed files give errors naming
// the file and key, the method turns a plan into per-layer cache specs, and the dynamic
// full-precision ratio replays a hand-worked sequence of appends.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <fstream>
#include <functional>
#include <numeric>

#include "../methods/kvmix/kvmix_plan_file.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using test::error_of;

ModelConfig layers_config(int64_t layers) {
  ModelConfig c = test::small_config(2);
  c.num_hidden_layers = layers;
  return c;
}

// A plan with scores and ratios; bits and scores follow simple patterns so tests can predict them.
kvmix::PlanFile sample_plan(int64_t layers) {
  kvmix::PlanFile p;
  p.model = "/models/tiny";
  p.num_layers = layers;
  p.calibration = YAML::Load("{calib: wiki.valid.tokens, samples: 4, max_len: 64}");
  p.extra.emplace_back("profile", YAML::Load("{prompts: 4, note: 'a: b'}"));
  for (int64_t l = 0; l < layers; ++l) {
    kvmix::PlanLayer row;
    row.layer = l;
    row.k_bits = l % 2 ? 3 : 2;
    row.v_bits = l % 3 ? 2 : 4;
    row.k_score = 1.0 / static_cast<double>(3 + l);       // not exactly representable in decimal
    row.v_score = 1e-7 * static_cast<double>(l + 1) / 7;  // tiny values keep their digits
    row.k_ratio = 0.25;
    row.v_ratio = 0.125;
    p.layers.push_back(row);
  }
  return p;
}

TEST(KvmixPlanFile, RoundTripsExactly) {
  test::TempDir tmp;
  const auto plan = sample_plan(5);
  kvmix::write_plan_file(plan, tmp / "sub/plan.yaml");  // creates the folder
  const auto back = kvmix::read_plan_file(tmp / "sub/plan.yaml");
  EXPECT_EQ(back.method, "kvmix");
  EXPECT_EQ(back.model, "/models/tiny");
  EXPECT_EQ(back.num_layers, 5);
  EXPECT_EQ(back.calibration["samples"].as<int>(), 4);
  ASSERT_EQ(back.extra.size(), 1u);
  EXPECT_EQ(back.extra[0].first, "profile");
  EXPECT_EQ(back.extra[0].second["note"].as<std::string>(), "a: b");
  ASSERT_EQ(back.layers.size(), 5u);
  for (size_t l = 0; l < 5; ++l) {
    EXPECT_EQ(back.layers[l].layer, static_cast<int64_t>(l));
    EXPECT_EQ(back.layers[l].k_bits, plan.layers[l].k_bits);
    EXPECT_EQ(back.layers[l].v_bits, plan.layers[l].v_bits);
    EXPECT_EQ(*back.layers[l].k_score, *plan.layers[l].k_score);  // bit-exact
    EXPECT_EQ(*back.layers[l].v_score, *plan.layers[l].v_score);
    EXPECT_EQ(*back.layers[l].k_ratio, 0.25);
  }
  EXPECT_TRUE(back.has_scores());
  // A person reads it: one line per layer, plain numbers.
  std::ifstream in(tmp / "sub/plan.yaml");
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("- {layer: 0, k_bits: 2, v_bits: 4, k_score: 0.3333333333333333,"), std::string::npos) << text;
  EXPECT_FALSE(std::filesystem::exists(tmp / "sub/plan.yaml.tmp"));
}

std::string plan_error(const std::string& text, int64_t model_layers = 3) {
  test::TempDir tmp;
  const std::string path = tmp / "bad_plan.yaml";
  std::ofstream(path) << text;
  const std::string e = error_of([&] {
    auto p = kvmix::read_plan_file(path);
    kvmix::check_plan_matches_model(p, model_layers);
  });
  EXPECT_NE(e.find(path), std::string::npos) << "error does not name the file: " << e;
  return e;
}

const char* kGoodLayers =
    "layers:\n"
    "  - {layer: 0, k_bits: 2, v_bits: 2}\n"
    "  - {layer: 1, k_bits: 3, v_bits: 4}\n"
    "  - {layer: 2, k_bits: 2, v_bits: 2}\n";

TEST(KvmixPlanFile, MalformedFilesNameTheFileAndKey) {
  const std::string head = "method: kvmix\nnum_layers: 3\n";
  // Sanity: the good file passes.
  {
    test::TempDir tmp;
    std::ofstream(tmp / "ok.yaml") << head << kGoodLayers;
    EXPECT_NO_THROW(kvmix::check_plan_matches_model(kvmix::read_plan_file(tmp / "ok.yaml"), 3));
  }
  std::string e = plan_error(head + kGoodLayers, 5);
  EXPECT_NE(e.find("num_layers"), std::string::npos) << e;
  EXPECT_NE(e.find("model has 5"), std::string::npos) << e;

  e = plan_error("method: kvmix\nnum_layers: 4\n" + std::string(kGoodLayers));
  EXPECT_NE(e.find("3 entries but num_layers is 4"), std::string::npos) << e;

  e = plan_error(head + "layers:\n  - {layer: 0, k_bits: 2, v_bits: 2}\n  - {layer: 1, k_bits: 5, v_bits: 4}\n"
                        "  - {layer: 2, k_bits: 2, v_bits: 2}\n");
  EXPECT_NE(e.find("layers[1].k_bits (line 5): 5 is not one of 1, 2, 3, 4, 8, 16"), std::string::npos) << e;

  e = plan_error(head + "layers:\n  - {layer: 0, k_bits: 2, v_bits: 2}\n  - {layer: 1, k_bits: 3, v_bits: 4}\n"
                        "  - {layer: 2, k_bits: 2}\n");
  EXPECT_NE(e.find("layers[2] (line 6): missing key 'v_bits'"), std::string::npos) << e;

  e = plan_error("method: kvmix\n" + std::string(kGoodLayers));
  EXPECT_NE(e.find("missing key 'num_layers'"), std::string::npos) << e;

  e = plan_error("method: kvmix\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: two, v_bits: 2}\n", 1);
  EXPECT_NE(e.find("layers[0].k_bits (line 4): 'two' is not an integer"), std::string::npos) << e;

  e = plan_error(head + "layers:\n  - {layer: 1, k_bits: 2, v_bits: 2}\n  - {layer: 0, k_bits: 2, v_bits: 2}\n"
                        "  - {layer: 2, k_bits: 2, v_bits: 2}\n");
  EXPECT_NE(e.find("layers[0].layer"), std::string::npos) << e;

  e = plan_error("method: kvmix\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 2, k_ratio: 1.5}\n", 1);
  EXPECT_NE(e.find("layers[0].k_ratio"), std::string::npos) << e;

  e = plan_error(head + "layers: [\n");
  EXPECT_NE(e.find("not valid YAML"), std::string::npos) << e;

  e = error_of([] { kvmix::read_plan_file("/nonexistent/plan.yaml"); });
  EXPECT_NE(e.find("'/nonexistent/plan.yaml' does not exist"), std::string::npos) << e;
}

std::unique_ptr<KvMethod> kvmix_method(const std::string& yaml) {
  return MethodRegistry::instance().create("kvmix", YAML::Load(yaml));
}

TEST(KvmixMethod, PlanFileBecomesPerLayerCacheSpecs) {
  test::TempDir tmp;
  const auto file = sample_plan(5);
  kvmix::write_plan_file(file, tmp / "plan.yaml");
  const ModelConfig c = layers_config(5);

  const CachePlan plan = kvmix_method("{plan: " + tmp / "plan.yaml" + ", group: 4, k3_group: 8}")->plan(c);
  plan.validate(c.num_hidden_layers, c.head_dim);
  ASSERT_EQ(plan.layers.size(), 5u);
  for (size_t l = 0; l < 5; ++l) {
    const LayerPlan& lp = plan.layers[l];
    EXPECT_EQ(lp.k.bits, file.layers[l].k_bits);
    EXPECT_EQ(lp.v.bits, file.layers[l].v_bits);
    EXPECT_EQ(lp.k.granularity, Granularity::PerChannel);
    EXPECT_EQ(lp.v.granularity, Granularity::PerToken);
    EXPECT_FALSE(lp.k.symmetric);
    EXPECT_EQ(lp.k.group, lp.k.bits == 3 ? 8 : 4);  // k3_group applies to 3-bit key layers only
    EXPECT_EQ(lp.v.group, 4);
    EXPECT_EQ(lp.k_flush.kind, FlushRule::Kind::Ratio);
    EXPECT_EQ(lp.v_flush.kind, FlushRule::Kind::Ratio);
    EXPECT_EQ(lp.k_flush.ratio, 0.25);  // the file's ratios
    EXPECT_EQ(lp.v_flush.ratio, 0.125);
    EXPECT_EQ(lp.v_flush.unit, 4);      // values move in whole groups of G tokens too
  }
  // An explicit preset replaces the file's ratios: code preset 3 -> 0.2, 2 -> 0.2, 4 -> 0.3.
  const CachePlan preset = kvmix_method("{plan: " + tmp / "plan.yaml" + ", group: 4, ratio_preset: code}")->plan(c);
  for (size_t l = 0; l < 5; ++l) {
    EXPECT_EQ(preset.layers[l].k_flush.ratio, 0.2);
    EXPECT_EQ(preset.layers[l].v_flush.ratio, file.layers[l].v_bits == 4 ? 0.3 : 0.2);
  }
  const CachePlan paper = kvmix_method("{plan: " + tmp / "plan.yaml" + ", group: 4, ratio_preset: paper}")->plan(c);
  for (size_t l = 0; l < 5; ++l) EXPECT_EQ(paper.layers[l].v_flush.ratio, file.layers[l].v_bits == 4 ? 0.2 : 0.1);

  // The plan is validated against the model.
  const std::string e = error_of([&] { kvmix_method("{plan: " + tmp / "plan.yaml" + "}")->plan(layers_config(6)); });
  EXPECT_NE(e.find("plan.yaml: num_layers"), std::string::npos) << e;
}

// The paper's configuration through the method: a 32-layer model allocated from the plan's scores
// with the default tiers holds K 2.1875 and V 2.375 bits on average.
TEST(KvmixMethod, ScoresWithDefaultTiersGiveK219V238On32Layers) {
  test::TempDir tmp;
  auto file = sample_plan(32);
  kvmix::write_plan_file(file, tmp / "plan.yaml");
  const ModelConfig c = layers_config(32);
  auto average = [](const CachePlan& p, bool keys) {
    double s = 0;
    for (const auto& l : p.layers) s += keys ? l.k.bits : l.v.bits;
    return s / static_cast<double>(p.layers.size());
  };
  const CachePlan plan = kvmix_method("{plan: " + tmp / "plan.yaml" + ", bits_from: scores, group: 4}")->plan(c);
  EXPECT_EQ(average(plan, true), 2.1875);
  EXPECT_EQ(average(plan, false), 2.375);
  // k_score = 1 / (3 + l) falls with l: layers 0..5 are the high ones; v_score rises: 26..31.
  for (size_t l = 0; l < 32; ++l) {
    EXPECT_EQ(plan.layers[l].k.bits, l < 6 ? 3 : 2) << l;
    EXPECT_EQ(plan.layers[l].v.bits, l >= 26 ? 4 : 2) << l;
    EXPECT_EQ(plan.layers[l].v_flush.ratio, l >= 26 ? 0.3 : 0.2) << l;  // code preset from the new bits
  }
  const CachePlan budget =
      kvmix_method("{plan: " + tmp / "plan.yaml" + ", bits_from: scores, group: 4, k_avg_bits: 2.5, v_avg_bits: 3}")
          ->plan(c);
  EXPECT_EQ(average(budget, true), 2.5);
  EXPECT_EQ(average(budget, false), 3.0);
}

// The ranking ablation's other control: the plan's ranking upside down. With k_score falling in l
// and v_score rising, the high-bit layers move to the other end; the averages stay.
TEST(KvmixMethod, ReversedRankingGivesTheHighBitsToTheLeastImportantLayers) {
  test::TempDir tmp;
  kvmix::write_plan_file(sample_plan(32), tmp / "plan.yaml");
  const ModelConfig c = layers_config(32);
  const CachePlan plan = kvmix_method("{plan: " + tmp / "plan.yaml" + ", bits_from: reversed, group: 4}")->plan(c);
  int k = 0, v = 0;
  for (size_t l = 0; l < 32; ++l) {
    EXPECT_EQ(plan.layers[l].k.bits, l >= 26 ? 3 : 2) << l;
    EXPECT_EQ(plan.layers[l].v.bits, l < 6 ? 4 : 2) << l;
    k += plan.layers[l].k.bits, v += plan.layers[l].v.bits;
  }
  EXPECT_EQ(k, 70);
  EXPECT_EQ(v, 76);
  const CachePlan budget =
      kvmix_method("{plan: " + tmp / "plan.yaml" + ", bits_from: reversed, group: 4, k_avg_bits: 2.5, v_avg_bits: 3}")
          ->plan(c);
  double kb = 0, vb = 0;
  for (const auto& l : budget.layers) kb += l.k.bits, vb += l.v.bits;
  EXPECT_EQ(kb / 32, 2.5);
  EXPECT_EQ(vb / 32, 3.0);
  EXPECT_GE(budget.layers[31].k.bits, budget.layers[0].k.bits);  // reversed: the last layers rank first
  std::string e = error_of([] { kvmix_method("{bits_from: reversed}"); });
  EXPECT_NE(e.find("set plan=FILE"), std::string::npos) << e;
}

TEST(KvmixMethod, ParameterCombinationsAreChecked) {
  test::TempDir tmp;
  kvmix::write_plan_file(sample_plan(3), tmp / "plan.yaml");
  std::string e = error_of([] { kvmix_method("{}"); });
  EXPECT_NE(e.find("kvlab profile kvmix"), std::string::npos) << e;
  e = error_of([&] { kvmix_method("{plan: " + tmp / "plan.yaml" + ", k_avg_bits: 2.5}"); });
  EXPECT_NE(e.find("'k_avg_bits'"), std::string::npos) << e;
  EXPECT_NE(e.find("bits_from=scores"), std::string::npos) << e;
  e = error_of([&] { kvmix_method("{plan: " + tmp / "plan.yaml" + ", bits_from: random}"); });
  EXPECT_NE(e.find("bits_from=random"), std::string::npos) << e;
  // Scores are needed to allocate from scores.
  std::ofstream(tmp / "bits_only.yaml") << "method: kvmix\nnum_layers: 3\n" << kGoodLayers;
  e = error_of([&] { kvmix_method("{plan: " + tmp / "bits_only.yaml" + ", bits_from: scores}"); });
  EXPECT_NE(e.find("bits_only.yaml: layers[0]: missing key 'k_score'"), std::string::npos) << e;
  // ...but a plan with bits only is usable as it is, ratios from the bits.
  const CachePlan p = kvmix_method("{plan: " + tmp / "bits_only.yaml" + ", group: 4}")->plan(layers_config(3));
  EXPECT_EQ(p.layers[1].v.bits, 4);
  EXPECT_EQ(p.layers[1].v_flush.ratio, 0.3);
  // An unreachable budget fails when the plan is made, naming the target.
  e = error_of([&] {
    kvmix_method("{plan: " + tmp / "plan.yaml" + ", bits_from: scores, v_avg_bits: 1.5}")->plan(layers_config(3));
  });
  EXPECT_NE(e.find("v_avg_bits = 1.5"), std::string::npos) << e;
}

// A plan labelled for another method is refused, naming the file and the label (as the KVTuner
// and MixKVQ plans are).
TEST(KvmixMethod, APlanForAnotherMethodIsRefused) {
  test::TempDir tmp;
  for (const char* other : {"uniform", "kvtuner", "mixkvq"}) {
    std::ofstream(tmp / "plan.yaml") << "method: " << other << "\nnum_layers: 3\n" << kGoodLayers;
    const std::string e = error_of([&] { kvmix_method("{plan: " + tmp / "plan.yaml" + "}")->plan(layers_config(3)); });
    EXPECT_NE(e.find(tmp / "plan.yaml"), std::string::npos) << e;
    EXPECT_NE(e.find(std::string("method is '") + other + "', expected 'kvmix'"), std::string::npos) << e;
  }
}

// The paper's random-k2.19v2.38 baseline: a random ranking, same tiers, no plan; the seed decides.
TEST(KvmixMethod, RandomRankingIsSeededAndKeepsTheAverages) {
  const ModelConfig c = layers_config(32);
  auto bits_of = [&](int seed) {
    const CachePlan p = kvmix_method("{bits_from: random, group: 4, seed: " + std::to_string(seed) + "}")->plan(c);
    std::vector<int> b;
    for (const auto& l : p.layers) b.push_back(l.k.bits * 100 + l.v.bits);
    return b;
  };
  const auto a = bits_of(1);
  EXPECT_EQ(a, bits_of(1));
  EXPECT_NE(a, bits_of(2));
  const CachePlan p = kvmix_method("{bits_from: random, group: 4}")->plan(c);
  int k = 0, v = 0;
  for (const auto& l : p.layers) k += l.k.bits, v += l.v.bits;
  EXPECT_EQ(k, 70);
  EXPECT_EQ(v, 76);
}

// METHODS.md section 4, replayed through a layer's cache. One layer, G = 4, K 4 bits (code preset
// r = 0.3), V 2 bits (r = 0.2). After every append: n = full-precision tokens, keep = floor(r n),
// move floor((n - keep) / 4) * 4 of the oldest.
//   keys, r = 0.3                                  values, r = 0.2
//   prefill 23: keep 6, move 16 -> packed 16, fp 7    keep 4, move 16 -> packed 16, fp 7
//   step 1: n 8: keep 2, move 4  -> 20, 4              n 8: keep 1, move 4 -> 20, 4
//   step 2: n 5: keep 1, move 4  -> 24, 1              n 5: keep 1, move 4 -> 24, 1
//   step 3: n 2: keep 0, move 0  -> 24, 2              n 2: keep 0, move 0 -> 24, 2
//   step 4: n 3: keep 0, move 0  -> 24, 3              n 3: keep 0, move 0 -> 24, 3
//   step 5: n 4: keep 1, move 0  -> 24, 4              n 4: keep 0, move 4 -> 28, 0
//   step 6: n 5: keep 1, move 4  -> 28, 1              n 1: keep 0, move 0 -> 28, 1
//   step 7: n 2: keep 0, move 0  -> 28, 2              n 2: keep 0, move 0 -> 28, 2
TEST(KvmixMethod, DynamicRatioReplaysAHandWorkedSequence) {
  test::TempDir tmp;
  std::ofstream(tmp / "plan.yaml") << "method: kvmix\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: 4, v_bits: 2}\n";
  ModelConfig c = layers_config(1);
  const CachePlan plan = kvmix_method("{plan: " + tmp / "plan.yaml" + ", group: 4}")->plan(c);
  QuantizedLayerCache cache(plan.layers[0], MultiTokenMode::FullPrecision);
  const std::vector<std::array<int64_t, 4>> expected = {
      // packed K, fp K, packed V, fp V
      {16, 7, 16, 7}, {20, 4, 20, 4}, {24, 1, 24, 1}, {24, 2, 24, 2},
      {24, 3, 24, 3}, {24, 4, 28, 0}, {28, 1, 28, 1}, {28, 2, 28, 2},
  };
  at::manual_seed(0);
  for (size_t step = 0; step < expected.size(); ++step) {
    const int64_t T = step == 0 ? 23 : 1;
    cache.attend(at::randn({1, 4, T, 8}), at::randn({1, 2, T, 8}), at::randn({1, 2, T, 8}));
    const auto& e = expected[step];
    EXPECT_EQ(cache.keys().packed_tokens(), e[0]) << "step " << step;
    EXPECT_EQ(cache.keys().full_tokens(), e[1]) << "step " << step;
    EXPECT_EQ(cache.values().packed_tokens(), e[2]) << "step " << step;
    EXPECT_EQ(cache.values().full_tokens(), e[3]) << "step " << step;
  }
}

// The full-precision counts of ../shared/docs/DOSSIER.md section 1.5 (simulated there from the
// reference code): a 4000-token prompt, G = 32, then decode steps.
TEST(KvmixMethod, DynamicRatioMatchesTheDossierTable) {
  struct Row {
    double r;
    std::vector<int64_t> fp;  // after prefill, then after decode steps 1..8
  };
  const std::vector<Row> rows = {{0.2, {800, 161, 34, 35, 36, 37, 38, 7, 8}},
                                 {0.1, {416, 65, 34, 3, 4, 5, 6, 7, 8}},
                                 {0.3, {1216, 385, 130, 67, 36, 37, 38, 39, 40}}};
  for (const auto& row : rows) {
    TensorQuantSpec spec;
    spec.bits = 2;
    spec.group = 32;
    spec.granularity = Granularity::PerChannel;
    FlushRule rule;
    rule.kind = FlushRule::Kind::Ratio;
    rule.ratio = row.r;
    QuantizedStream s(spec, rule);
    for (size_t step = 0; step < row.fp.size(); ++step) {
      s.append(at::randn({1, 1, step == 0 ? 4000 : 1, 2}));
      s.flush();
      EXPECT_EQ(s.full_tokens(), row.fp[step]) << "r " << row.r << " step " << step;
    }
  }
}

// Perplexity's one-pass path equals feeding tokens one at a time through a kvmix cache (the
// ratio rule's schedule is what the masked pass relies on).
TEST(KvmixMethod, FastPerplexityEqualsStreamingUnderTheRatioRule) {
  test::TempDir tmp;
  std::ofstream(tmp / "plan.yaml") << "method: kvmix\nnum_layers: 2\nlayers:\n"
                                   << "  - {layer: 0, k_bits: 3, v_bits: 4}\n  - {layer: 1, k_bits: 2, v_bits: 2}\n";
  const ModelConfig c = test::small_config(2);
  LlamaModel m = LlamaModel::random(c, 11, {}, 0.3);
  const CachePlan plan = kvmix_method("{plan: " + tmp / "plan.yaml" + ", group: 4}")->plan(c);
  std::vector<int32_t> ids;
  for (int i = 0; i < 80; ++i) ids.push_back((i * 7 + 3) % 50);
  PerplexityOptions opt;
  opt.ctx = 40;
  opt.progress = false;
  const auto fast = evaluate_quantized_perplexity(m, ids, opt, plan, PerplexityPath::Fast);
  const auto stream = evaluate_quantized_perplexity(m, ids, opt, plan, PerplexityPath::Stream);
  EXPECT_GT(fast.kl_mean, 0.0);
  EXPECT_NEAR(fast.quantized.ppl(), stream.quantized.ppl(), 1e-4 * stream.quantized.ppl());
  // KL is a small difference of log-probabilities: summation order (which differs between BLAS
  // kernels of different CPUs) can flip a code at a rounding tie, moving it by ~1e-4 relative; a
  // wrong schedule moves it by tens of percent.
  EXPECT_NEAR(fast.kl_mean, stream.kl_mean, 1e-3 * stream.kl_mean + 1e-7);
}

}  // namespace
}  // namespace kvlab
