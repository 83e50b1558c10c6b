// KVTuner-style layer-wise pairs: pair parsing, dominated-pair pruning worked by hand, the Pareto
// front against brute-force enumeration, clustering on planted layer profiles and the search space
// it reports, the calibration loss against evaluate_quantized_perplexity, the method reading a
// plan file, and the search step end to end on a small model.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "../methods/kvtuner/bit_pair.h"
#include "../methods/kvtuner/calibration_loss.h"
#include "../methods/kvtuner/kvtuner_scheme.h"
#include "../methods/kvtuner/layer_clustering.h"
#include "../methods/kvtuner/layer_search.h"
#include "../methods/kvtuner/pair_pruning.h"
#include "../methods/kvtuner/pareto_front.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/calibration_data.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/plan_file.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using kvtuner::BitPair;

using test::error_of;

TEST(KvTunerPairs, ParsesKVTunerNames) {
  EXPECT_EQ(kvtuner::parse_bit_pair("K8V4", "t"), (BitPair{8, 4}));
  EXPECT_EQ(kvtuner::parse_bit_pair("kv2", "t"), (BitPair{2, 2}));
  EXPECT_EQ(kvtuner::parse_bit_pair(" K16V2 ", "t"), (BitPair{16, 2}));
  EXPECT_EQ(kvtuner::parse_bit_pair("K4V8", "t").name(), "K4V8");
  EXPECT_DOUBLE_EQ((BitPair{8, 4}).avg_bits(), 6.0);
  const auto list = kvtuner::parse_bit_pairs("K8V8, K8V4,KV4", "--pairs");
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[2], (BitPair{4, 4}));
  for (const char* bad : {"K5V4", "K4", "V4K4", "K4V4x", "K", ""}) {
    const std::string e = error_of([&] { kvtuner::parse_bit_pairs(bad, "--pairs"); });
    EXPECT_NE(e.find("--pairs"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(error_of([] { kvtuner::parse_bit_pairs("K4V4,KV4", "--pairs"); }).find("twice"), std::string::npos);
}

// Hand-worked: bits (k + v) and losses of seven pairs.
//   K8V8 16 .07   dominated by K8V4 (fewer bits, less loss)
//   K8V4 12 .02   kept
//   K4V8 12 .05   dominated by K8V4 (same bits, more loss)
//   K4V4  8 .06   kept (fewer bits than K8V4, less loss than K4V2)
//   K2V4  6 .30   dominated by K4V2
//   K4V2  6 .10   kept
//   K2V2  4 .40   kept (fewest bits)
TEST(KvTunerPruning, DominatedPairsAreRemoved) {
  const auto pairs = kvtuner::parse_bit_pairs("K8V8,K8V4,K4V8,K4V4,K2V4,K4V2,K2V2", "t");
  const std::vector<double> loss = {0.07, 0.02, 0.05, 0.06, 0.30, 0.10, 0.40};
  EXPECT_EQ(kvtuner::undominated_pairs(pairs, loss), (std::vector<size_t>{1, 3, 5, 6}));
  // Exact ties (same bits, same loss): the pair listed first stays.
  const auto tie = kvtuner::parse_bit_pairs("K4V8,K8V4", "t");
  EXPECT_EQ(kvtuner::undominated_pairs(tie, {0.1, 0.1}), (std::vector<size_t>{0}));
  EXPECT_EQ(kvtuner::undominated_pairs(tie, {0.1, 0.2}), (std::vector<size_t>{0}));  // same bits: K8V4 is worse
  // More bits but less loss: both stay.
  const auto two = kvtuner::parse_bit_pairs("K8V8,K2V2", "t");
  EXPECT_EQ(kvtuner::undominated_pairs(two, {0.1, 0.2}), (std::vector<size_t>{0, 1}));
}

// Every combination enumerated; then the non-dominated (bits, loss) set by the definition: the
// least loss at each bit total, kept when it beats every total with fewer bits.
std::vector<std::pair<int64_t, double>> brute_force_front(const std::vector<std::vector<kvtuner::Option>>& groups) {
  std::vector<std::pair<int64_t, double>> all = {{0, 0.0}};
  for (const auto& g : groups) {
    std::vector<std::pair<int64_t, double>> next;
    for (const auto& a : all)
      for (const auto& o : g) next.push_back({a.first + o.bits, a.second + o.loss});
    all = next;
  }
  std::map<int64_t, double> least;
  for (const auto& [b, l] : all)
    if (!least.count(b) || l < least[b]) least[b] = l;
  std::vector<std::pair<int64_t, double>> front;
  for (const auto& [b, l] : least)
    if (front.empty() || l < front.back().second - 1e-12) front.push_back({b, l});
  return front;
}

TEST(KvTunerParetoFront, EqualsBruteForceAndIsNonDominated) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> bits(2, 16);
  std::uniform_real_distribution<double> loss(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::vector<kvtuner::Option>> groups(5);
    for (auto& g : groups)
      for (int o = 0; o < 4; ++o) g.push_back({bits(rng), loss(rng)});
    const auto front = kvtuner::additive_pareto_front(groups);
    const auto want = brute_force_front(groups);
    ASSERT_EQ(front.size(), want.size()) << "trial " << trial;
    for (size_t i = 0; i < front.size(); ++i) {
      EXPECT_EQ(front[i].bits, want[i].first);
      EXPECT_NEAR(front[i].loss, want[i].second, 1e-12);
      // The recorded choice adds up to the point.
      int64_t b = 0;
      double l = 0;
      for (size_t g = 0; g < groups.size(); ++g) b += groups[g][front[i].choice[g]].bits, l += groups[g][front[i].choice[g]].loss;
      EXPECT_EQ(b, front[i].bits);
      EXPECT_NEAR(l, front[i].loss, 1e-12);
      if (i > 0) {
        EXPECT_GT(front[i].bits, front[i - 1].bits);
        EXPECT_LT(front[i].loss, front[i - 1].loss);  // non-dominated: more bits must buy less loss
      }
    }
  }
}

// Sensitivities of a layer: keys cost `a` per halving of K precision, values `b`.
std::vector<double> profile(const std::vector<BitPair>& pairs, double a, double b) {
  std::vector<double> s;
  for (const auto& p : pairs) s.push_back(a * std::pow(2.0, -p.k) + b * std::pow(2.0, -p.v));
  return s;
}

// Nine layers of three planted kinds (key-sensitive, value-sensitive, insensitive), interleaved,
// with a little noise: three clusters recover the kinds, and the search space shrinks as reported.
TEST(KvTunerClustering, RecoversPlantedGroupsAndShrinksTheSpace) {
  const auto pairs = kvtuner::parse_bit_pairs("K8V8,K8V4,K4V8,K4V4,K4V2,K2V4,K2V2", "t");
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> noise(0.95, 1.05);
  std::vector<std::vector<double>> sens;
  for (int l = 0; l < 9; ++l) {
    const int kind = l % 3;
    const double a = kind == 0 ? 10.0 : kind == 1 ? 0.5 : 0.01, b = kind == 0 ? 0.5 : kind == 1 ? 10.0 : 0.01;
    sens.push_back(profile(pairs, a * noise(rng), b * noise(rng)));
  }
  const auto clusters = kvtuner::cluster_layers(kvtuner::log_sensitivity_features(sens), 3);
  EXPECT_EQ(clusters, (std::vector<std::vector<int64_t>>{{0, 3, 6}, {1, 4, 7}, {2, 5, 8}}));

  const auto r = kvtuner::search_layer_pairs(pairs, sens, 3);
  EXPECT_DOUBLE_EQ(r.space.raw, std::pow(7.0, 9));
  double pruned = 1, clustered = 1;
  for (size_t l = 0; l < 9; ++l) {
    EXPECT_EQ(r.kept[l], kvtuner::undominated_pairs(pairs, sens[l]));
    pruned *= static_cast<double>(r.kept[l].size());
  }
  for (const auto& c : r.clusters) clustered *= static_cast<double>(c.pairs.size());
  EXPECT_DOUBLE_EQ(r.space.pruned, pruned);
  EXPECT_DOUBLE_EQ(r.space.clustered, clustered);
  EXPECT_LT(r.space.pruned, r.space.raw);
  EXPECT_LT(r.space.clustered, r.space.pruned);
  EXPECT_EQ(r.space.clusters, 3);
  const std::string d = r.space.describe();
  EXPECT_NE(d.find("search space: 4.03536e+07 combinations ->"), std::string::npos) << d;
  EXPECT_NE(d.find("after clustering (3 clusters)"), std::string::npos) << d;
  // Key-sensitive layers never take fewer K bits than V bits on the front, value-sensitive the reverse.
  for (const auto& pt : r.front)
    for (int l = 0; l < 9; ++l) {
      const BitPair p = pairs[pt.layer_pair[static_cast<size_t>(l)]];
      if (l % 3 == 0) {
        EXPECT_GE(p.k, p.v);
      } else if (l % 3 == 1) {
        EXPECT_LE(p.k, p.v);
      }
    }
  // Clusters pick from their pruned candidates only, yet the front equals brute force over every
  // pair for every cluster (pruning on summed losses loses nothing).
  std::vector<std::vector<kvtuner::Option>> full(3);
  for (size_t c = 0; c < 3; ++c)
    for (size_t p = 0; p < pairs.size(); ++p) {
      double s = 0;
      for (int64_t l : r.clusters[c].layers) s += sens[static_cast<size_t>(l)][p];
      full[c].push_back({3 * pairs[p].bit_sum(), s});
    }
  const auto want = brute_force_front(full);
  ASSERT_EQ(r.front.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_DOUBLE_EQ(r.front[i].avg_bits, static_cast<double>(want[i].first) / 18.0);
    EXPECT_NEAR(r.front[i].loss, want[i].second, 1e-12);
  }
  // Without clustering every layer is its own cluster.
  const auto alone = kvtuner::search_layer_pairs(pairs, sens, 0);
  EXPECT_EQ(alone.clusters.size(), 9u);
  EXPECT_DOUBLE_EQ(alone.space.clustered, alone.space.pruned);
}

TEST(KvTunerSearch, TargetPicksTheBestPlanAtOrUnder) {
  std::vector<kvtuner::PlanPoint> front = {{2.0, 0.9, {}}, {3.0, 0.5, {}}, {4.5, 0.1, {}}};
  EXPECT_EQ(kvtuner::best_at_or_under(front, 4.0), std::optional<size_t>(1));
  EXPECT_EQ(kvtuner::best_at_or_under(front, 4.5), std::optional<size_t>(2));
  EXPECT_EQ(kvtuner::best_at_or_under(front, 1.5), std::nullopt);
}

TEST(KvTunerScheme, ModesGiveTheKiviOrPerTokenLayout) {
  kvtuner::Scheme s;
  s.group = 8, s.residual = 16;
  LayerPlan kivi = s.layer({4, 2});
  EXPECT_EQ(kivi.k.bits, 4);
  EXPECT_EQ(kivi.v.bits, 2);
  EXPECT_EQ(kivi.k.granularity, Granularity::PerChannel);
  EXPECT_EQ(kivi.v.granularity, Granularity::PerToken);
  EXPECT_EQ(kivi.k_flush.kind, FlushRule::Kind::Block);
  EXPECT_EQ(kivi.v_flush.kind, FlushRule::Kind::Recent);
  EXPECT_EQ(kivi.v_flush.window, 16);
  s.per_channel_keys = false, s.residual = 0;
  LayerPlan pt = s.layer({8, 16});
  EXPECT_EQ(pt.k.granularity, Granularity::PerToken);
  EXPECT_FALSE(pt.v.quantized());
  EXPECT_EQ(pt.k_flush.tokens_to_flush(5, 1), 5);  // residual 0: packed at once
}

using test::FoldTokenizer;

std::string calib_text() {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "the quick brown fox " + std::to_string(i * 7919 % 1000) + " jumps over\n";
  return text;
}

// A random model whose weights are larger than small_config's default, so quantization moves its
// outputs measurably.
LlamaModel test_model(int64_t layers = 3) {
  ModelConfig c = test::small_config(2);
  c.num_hidden_layers = layers;
  return LlamaModel::random(c, 11, {}, 0.2);
}

TEST(KvTunerLoss, EqualsTheQuantizedPerplexityEvaluator) {
  test::TempDir tmp;
  std::ofstream(tmp / "calib.txt") << calib_text();
  LlamaModel m = test_model();
  FoldTokenizer tok;
  const ParamSet dp = ParamSet::resolve(calibration_data_params(), YAML::Load("{calib: " + (tmp / "calib.txt") +
                                                                             ", samples: 3, max_len: 40, bos: none}"),
                                        "test");
  const auto windows = load_calibration_windows(dp, tok);
  ASSERT_EQ(windows.size(), 3u);
  kvtuner::CalibrationLoss loss(m, windows);
  kvtuner::Scheme s;
  s.group = 8, s.residual = 8;
  const CachePlan plan = s.plan({{2, 2}, {16, 16}, {4, 2}});
  const kvtuner::PlanLoss got = loss.measure(plan);

  PerplexityOptions opt;
  opt.ctx = 40;
  opt.max_windows = 3;
  opt.progress = false;
  const auto want = evaluate_quantized_perplexity(m, tok.encode(calib_text(), false), opt, plan);
  EXPECT_GT(want.kl_mean, 1e-4);
  // Batched windows vs one at a time: the same up to fp32 rounding (which can flip a code).
  EXPECT_NEAR(got.kl_mean, want.kl_mean, 1e-4 * want.kl_mean);
  EXPECT_NEAR(got.mean_nll, want.quantized.mean_nll(), 1e-5 * want.quantized.mean_nll());
  EXPECT_NEAR(got.ref_nll, want.reference.mean_nll(), 1e-6 * want.reference.mean_nll());
  EXPECT_DOUBLE_EQ(got.value(kvtuner::LossKind::PPL), got.mean_nll - got.ref_nll);
  // An all-full-precision plan loses nothing.
  EXPECT_EQ(loss.measure(s.plan({{16, 16}, {16, 16}, {16, 16}})).kl_mean, 0.0);
}

void write_plan(const std::string& path, const std::string& body) { std::ofstream(path) << body; }

TEST(KvTunerMethod, ReadsPerLayerPairsFromAPlanFile) {
  test::TempDir tmp;
  ModelConfig c = test::small_config();  // 2 layers, head_dim 8
  write_plan(tmp / "p.yaml",
             "method: kvtuner\nnum_layers: 2\ncalibration: {mode: per-token, group: 8, residual: 0}\n"
             "layers:\n  - {layer: 0, k_bits: 8, v_bits: 4}\n  - {layer: 1, k_bits: 2, v_bits: 16}\n");
  auto& reg = MethodRegistry::instance();
  CachePlan plan = reg.create("kvtuner", YAML::Load("{plan: " + (tmp / "p.yaml") + "}"))->plan(c);
  ASSERT_EQ(plan.layers.size(), 2u);
  EXPECT_EQ(plan.layers[0].k.bits, 8);
  EXPECT_EQ(plan.layers[0].v.bits, 4);
  EXPECT_EQ(plan.layers[1].k.bits, 2);
  EXPECT_FALSE(plan.layers[1].v.quantized());
  // The plan's scheme (per-token, G 8, R 0) unless set explicitly.
  EXPECT_EQ(plan.layers[0].k.granularity, Granularity::PerToken);
  EXPECT_EQ(plan.layers[0].k.group, 8);
  EXPECT_EQ(plan.layers[0].k_flush.tokens_to_flush(3, 1), 3);
  // ... and the method's resolved parameters (what results record) say so.
  const auto method = reg.create("kvtuner", YAML::Load("{plan: " + (tmp / "p.yaml") + ", residual: 8}"));
  EXPECT_EQ(method->params().string("mode"), "per-token");
  EXPECT_EQ(method->params().integer("group"), 8);
  EXPECT_EQ(method->params().integer("residual"), 8);
  plan = reg.create("kvtuner", YAML::Load("{plan: " + (tmp / "p.yaml") + ", mode: kivi, residual: 16}"))->plan(c);
  EXPECT_EQ(plan.layers[0].k.granularity, Granularity::PerChannel);
  EXPECT_EQ(plan.layers[0].k.group, 8);
  EXPECT_EQ(plan.layers[0].k_flush.kind, FlushRule::Kind::Block);
  // Mixed widths per layer run through the cache and are counted per layer.
  KvCache cache = make_cache(plan, MultiTokenMode::FullPrecision);
  const at::Tensor q = at::randn({1, 4, 32, 8}), k = at::randn({1, 4, 32, 8}), v = at::randn({1, 4, 32, 8});
  cache.layer(0).attend(q, k, v);
  cache.layer(1).attend(q, k, v);
  // KIVI keys with R 16: all 32 prompt tokens packed (32 mod 16 = 0), 4 blocks of G 8 per channel;
  // 4 kv heads x 4 blocks x 8 channels x words (8 codes of 8 bits: 2 words; of 2 bits: 1) x 4 bytes.
  EXPECT_EQ(cache.layer(0).bytes().keys.packed_codes, 4 * 4 * 8 * 2 * 4);
  EXPECT_EQ(cache.layer(1).bytes().keys.packed_codes, 4 * 4 * 8 * 1 * 4);
  // Values keep the newest 16 exact: 16 tokens of 8 channels at 4 bits = 1 word each; V16 none.
  EXPECT_EQ(cache.layer(0).bytes().values.packed_codes, 4 * 16 * 1 * 4);
  EXPECT_EQ(cache.layer(1).bytes().values.packed_codes, 0);
}

TEST(KvTunerMethod, BadPlansNameTheFileAndKey) {
  test::TempDir tmp;
  ModelConfig c = test::small_config();
  auto plan_error = [&](const std::string& body, const std::string& extra = "") {
    write_plan(tmp / "p.yaml", body);
    return error_of([&] {
      MethodRegistry::instance().create("kvtuner", YAML::Load("{plan: " + (tmp / "p.yaml") + extra + "}"))->plan(c);
    });
  };
  const std::string ok2 = "  - {layer: 0, k_bits: 4, v_bits: 2}\n  - {layer: 1, k_bits: 4, v_bits: 2}\n";
  std::string e = plan_error("method: kvtuner\nnum_layers: 2\nlayers:\n  - {layer: 0, k_bits: 5, v_bits: 2}\n"
                             "  - {layer: 1, k_bits: 4, v_bits: 2}\n");
  EXPECT_NE(e.find("p.yaml: layers[0].k_bits: 5 bits"), std::string::npos) << e;
  e = plan_error("method: kvtuner\nnum_layers: 2\nlayers:\n  - {layer: 0, k_bits: 4}\n  - {layer: 1, k_bits: 4, v_bits: 2}\n");
  EXPECT_NE(e.find("layers[0].v_bits: missing"), std::string::npos) << e;
  e = plan_error("method: kvtuner\nnum_layers: 3\nlayers:\n" + ok2 + "  - {layer: 2, k_bits: 4, v_bits: 2}\n");
  EXPECT_NE(e.find("the model has 2 layers"), std::string::npos) << e;
  e = plan_error("method: kvmix\nnum_layers: 2\nlayers:\n" + ok2);
  EXPECT_NE(e.find("expected 'kvtuner'"), std::string::npos) << e;
  e = plan_error("method: kvtuner\nnum_layers: 2\nlayers:\n  - {layer: 1, k_bits: 4, v_bits: 2}\n"
                 "  - {layer: 0, k_bits: 4, v_bits: 2}\n");
  EXPECT_NE(e.find("layers[0].layer: is 1, expected 0"), std::string::npos) << e;
  e = plan_error("method: kvtuner\nnum_layers: 2\ncalibration: {group: 32, mode: per-token}\nlayers:\n" + ok2);
  EXPECT_NE(e.find("p.yaml"), std::string::npos) << e;  // per-token G 32 does not divide head_dim 8
  EXPECT_NE(e.find("group size 32"), std::string::npos) << e;
  e = plan_error("method: kvtuner\nnum_layers: 2\nlayers: [\n");
  EXPECT_NE(e.find("p.yaml"), std::string::npos) << e;
  e = error_of([&] { MethodRegistry::instance().create("kvtuner", YAML::Node())->plan(c); });
  EXPECT_NE(e.find("kvlab search kvtuner"), std::string::npos) << e;
}

// The search step end to end on a 3-layer model: outputs exist and agree with each other, the
// K16V16 candidate measures exactly zero loss, the front is non-dominated and the chosen plan,
// at or under the target, runs through the method.
TEST(KvTunerSearch, EndToEndOnASmallModel) {
  test::TempDir tmp;
  std::ofstream(tmp / "calib.txt") << calib_text();
  LlamaModel m = test_model();
  FoldTokenizer tok;
  const CalibrationInfo& step = CalibrationRegistry::instance().find("search", "kvtuner");
  const ParamSet p = ParamSet::resolve(
      step.params,
      YAML::Load("{calib: " + (tmp / "calib.txt") +
                 ", samples: 2, max_len: 40, pairs: 'K16V16,K8V4,K4V4,K4V2,K2V4,K2V2', clusters: 2,"
                 " target_bits: 3.5, remeasure: 2, group: 8, residual: 8}"),
      "test");
  CalibrationContext ctx{m, tok, "(random)", p, tmp / "out", false};
  const std::string plan_path = step.run(ctx);
  EXPECT_EQ(plan_path, tmp / "out/plan.yaml");
  for (const char* f : {"sensitivity.csv", "pareto.csv", "pareto.yaml", "plan.yaml"})
    EXPECT_TRUE(std::filesystem::exists(tmp / ("out/" + std::string(f)))) << f;

  // sensitivity.csv: 3 layers x 6 pairs; K16V16 rows are exactly zero, the rest positive.
  std::ifstream in(tmp / "out/sensitivity.csv");
  std::string line;
  std::getline(in, line);
  int rows = 0;
  while (std::getline(in, line)) {
    ++rows;
    std::vector<std::string> cols;
    std::stringstream ss(line);
    for (std::string col; std::getline(ss, col, ',');) cols.push_back(col);
    ASSERT_EQ(cols.size(), 10u) << line;
    if (cols[1] == "K16V16") EXPECT_EQ(std::stod(cols[5]), 0.0) << line;
    else EXPECT_GT(std::stod(cols[5]), 0.0) << line;
  }
  EXPECT_EQ(rows, 18);

  const YAML::Node pareto = YAML::LoadFile(tmp / "out/pareto.yaml");
  const YAML::Node front = pareto["front"];
  ASSERT_GE(front.size(), 2u);
  for (size_t i = 1; i < front.size(); ++i) {
    EXPECT_GT(front[i]["avg_bits"].as<double>(), front[i - 1]["avg_bits"].as<double>());
    EXPECT_LT(front[i]["estimated_loss"].as<double>(), front[i - 1]["estimated_loss"].as<double>());
  }
  EXPECT_EQ(pareto["search_space"]["raw"].as<double>(), 216.0);
  EXPECT_EQ(pareto["search_space"]["clusters"].as<int>(), 2);

  const PlanFile plan = PlanFile::load(plan_path);
  plan.check("kvtuner", 3);
  double bits = 0;
  for (const auto& l : plan.layers) bits += 0.5 * (l.k_bits + l.v_bits);
  bits /= 3;
  EXPECT_LE(bits, 3.5 + 1e-9);
  EXPECT_NEAR(plan.extra["choice"]["avg_bits"].as<double>(), bits, 1e-6);
  EXPECT_TRUE(plan.extra["choice"]["measured_loss"]);  // re-measured
  EXPECT_EQ(plan.calibration["pairs"].as<std::string>(), "K16V16,K8V4,K4V4,K4V2,K2V4,K2V2");
  // The measured loss of the chosen plan is what the method's plan gives.
  const CachePlan cp = MethodRegistry::instance().create("kvtuner", YAML::Load("{plan: " + plan_path + "}"))->plan(m.config());
  kvtuner::CalibrationLoss loss(m, load_calibration_windows(p, tok));
  EXPECT_NEAR(loss.measure(cp).kl_mean, plan.extra["choice"]["measured_loss"].as<double>(), 1e-6);

  // A target below the cheapest plan: a clear error, and the front is still written.
  std::filesystem::remove(tmp / "out/pareto.yaml");
  const ParamSet low = ParamSet::resolve(step.params,
                                         YAML::Load("{calib: " + (tmp / "calib.txt") +
                                                    ", samples: 1, max_len: 40, pairs: 'K4V4,K2V2', target_bits: 1.5,"
                                                    " group: 8, residual: 8}"),
                                         "test");
  CalibrationContext ctx2{m, tok, "(random)", low, tmp / "out", false};
  const std::string e = error_of([&] { step.run(ctx2); });
  EXPECT_NE(e.find("at or under --target-bits 1.5"), std::string::npos) << e;
  EXPECT_TRUE(std::filesystem::exists(tmp / "out/pareto.yaml"));
}

// The sensitivity table (the search's whole cost) is reused by a search beside an earlier one that
// differs only in the target: a value planted in the first search's table shows up in the second's
// sensitivity.csv, so it was read, not measured. Other pairs, or a damaged table, measure afresh.
TEST(KvTunerSearch, ReusesTheSensitivityOfASearchBesideIt) {
  test::TempDir tmp;
  std::ofstream(tmp / "calib.txt") << calib_text();
  LlamaModel m = test_model();
  FoldTokenizer tok;
  const CalibrationInfo& step = CalibrationRegistry::instance().find("search", "kvtuner");
  auto search = [&](const std::string& out, const std::string& pairs, double target, const std::string& reuse = "") {
    const ParamSet p = ParamSet::resolve(
        step.params,
        YAML::Load("{calib: " + (tmp / "calib.txt") + ", samples: 2, max_len: 40, pairs: '" + pairs +
                   "', clusters: 2, target_bits: " + std::to_string(target) + ", remeasure: 1, group: 8, residual: 8}"),
        "test");
    CalibrationContext ctx{m, tok, "(random)", p, tmp / out, false, reuse.empty() ? "" : tmp / reuse};
    step.run(ctx);
  };
  auto loss_of = [&](const std::string& out, int layer, const std::string& pair) {
    std::ifstream in(tmp / (out + "/sensitivity.csv"));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::vector<std::string> cols;
      std::stringstream ss(line);
      for (std::string col; std::getline(ss, col, ',');) cols.push_back(col);
      if (std::stoi(cols[0]) == layer && cols[1] == pair) return std::stod(cols[5]);
    }
    ADD_FAILURE() << "no row " << layer << " " << pair << " in " << out;
    return -1.0;
  };
  auto rewrite_cache = [&](const std::string& out, const std::function<void(std::vector<std::string>&)>& edit) {
    std::vector<std::string> lines;
    {
      std::ifstream in(tmp / (out + "/sensitivity.cache"));
      for (std::string line; std::getline(in, line);) lines.push_back(line);
    }
    edit(lines);
    std::ofstream o(tmp / (out + "/sensitivity.cache"));
    for (const auto& l : lines) o << l << "\n";
  };
  const std::string pairs = "K16V16,K8V4,K4V4,K4V2,K2V4,K2V2";
  search("a", pairs, 3.5);
  const double measured = loss_of("a", 0, "K8V4");
  ASSERT_GT(measured, 0.0);
  // Plant KL 123 for layer 0, pair 1 (K8V4): rows are "layer pair kl nll ref_nll".
  rewrite_cache("a", [](std::vector<std::string>& lines) {
    ASSERT_EQ(lines.size(), 2u + 3 * 6);
    ASSERT_EQ(lines[3].rfind("0 1 ", 0), 0u) << lines[3];
    std::istringstream ss(lines[3]);
    std::string l, i, kl, nll, ref;
    ss >> l >> i >> kl >> nll >> ref;
    lines[3] = "0 1 123 " + nll + " " + ref;
  });
  search("b", pairs, 3.0);
  EXPECT_EQ(loss_of("b", 0, "K8V4"), 123.0);
  EXPECT_TRUE(std::filesystem::exists(tmp / "b/sensitivity.cache"));
  // The runner's layout: each search in a staging folder under the plan cache, finished ones in
  // <cache>/kvtuner-<key>/output/; the reuse folder (the cache) is searched below.
  std::filesystem::create_directories(tmp / "cache/kvtuner-1/output");
  std::filesystem::copy_file(tmp / "b/sensitivity.cache", tmp / "cache/kvtuner-1/output/sensitivity.cache");
  search("cache/.kvtuner-2.staging/plan.yaml", pairs, 2.5, "cache");
  EXPECT_EQ(loss_of("cache/.kvtuner-2.staging/plan.yaml", 0, "K8V4"), 123.0);
  std::filesystem::remove_all(tmp / "cache");
  // Another candidate list is another table: measured again, the true value.
  search("c", "K8V4,K4V4,K4V2,K2V4,K2V2", 3.0);
  EXPECT_NEAR(loss_of("c", 0, "K8V4"), measured, 1e-6 * measured);
  // Truncated tables are skipped (no error) and the search measures again.
  for (const char* out : {"a", "b"}) rewrite_cache(out, [](std::vector<std::string>& lines) { lines.pop_back(); });
  search("d", pairs, 3.0);
  EXPECT_NEAR(loss_of("d", 0, "K8V4"), measured, 1e-6 * measured);
  // Other weights behind the same model path are another model: its table is not reused.
  for (const char* out : {"a", "b"}) std::filesystem::remove_all(tmp / out);
  rewrite_cache("d", [](std::vector<std::string>& lines) {
    std::istringstream ss(lines[3]);
    std::string l, i, kl, nll, ref;
    ss >> l >> i >> kl >> nll >> ref;
    lines[3] = "0 1 123 " + nll + " " + ref;
  });
  search("e", pairs, 3.0);
  EXPECT_EQ(loss_of("e", 0, "K8V4"), 123.0) << "same model: the planted table is read";
  m.weights().layers[1].k_proj.mul_(1.5);
  search("f", pairs, 3.0);
  EXPECT_NE(loss_of("f", 0, "K8V4"), 123.0) << "changed weights must be measured again";
}

}  // namespace
}  // namespace kvlab
