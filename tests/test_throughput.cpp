// Generation through quantized caches and the throughput runs built on it: generation with a
// chunked prefill equals feeding every token one at a time through the same cache, and its tokens
// are what the masked one-pass reference predicts; a batch decodes exactly as its sequences do one
// at a time; the throughput run generates what greedy_generate does and counts what the cache
// holds; the max-batch search finds the boundary of a budget and never reports a batch over it;
// `kvlab bench throughput` and the runner's `throughput` task end to end.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_run.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/throughput.h"
#include "kvlab/eval/throughput_methods.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

ModelConfig config() {
  ModelConfig c = test::small_config(2);
  c.head_dim = 16, c.hidden_size = 64, c.intermediate_size = 96;
  return c;
}

// A model whose next-token choices have clear margins (larger weights), so that greedy tokens do
// not hinge on the last bits of a sum.
LlamaModel model(c10::ScalarType dtype = at::kFloat) {
  LoadOptions opt;
  opt.dtype = dtype;
  return LlamaModel::random(config(), 17, opt, 0.35);
}

CachePlan plan_for(const std::string& method, const std::string& params) {
  return MethodRegistry::instance().create(method, YAML::Load(params))->plan(config());
}

std::vector<std::vector<int64_t>> prompts(int64_t B, int64_t T, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  at::Tensor t = at::randint(2, config().vocab_size, {B, T}, g, at::TensorOptions().dtype(at::kLong));
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) out[static_cast<size_t>(b)].assign(t[b].data_ptr<int64_t>(), t[b].data_ptr<int64_t>() + T);
  return out;
}

const std::vector<std::pair<std::string, std::string>>& quantized_plans() {
  static const std::vector<std::pair<std::string, std::string>> plans = {
      {"kivi", "{bits: 2, group: 4, residual: 8}"},
      {"kvmix", "{bits_from: random, group: 4}"},
      {"uniform", "{bits: 2, group: 8, window: 5}"},
      {"uniform", "{bits: 4, group: 4, k_axis: per-channel, window: 3}"}};
  return plans;
}

// Generation with the prompt as one forward equals feeding the prompt one token at a time (cache in
// token-by-token mode: every query sees each key as the streaming cache would hold it at its step),
// and every generated token is the argmax the masked one-pass reference (dequantize + matmul
// attention over the whole sequence) gives at that position: the decode kernels over the packed
// cache agree with the definition.
TEST(GenerationThroughCache, EqualsTokenByTokenDecoding) {
  c10::AutoGradMode no_grad(false);
  LlamaModel m = model(at::kBFloat16);
  const auto p = prompts(1, 21, 3);
  GenerateOptions opt;
  opt.max_new_tokens = 30;
  for (const auto& [method, params] : quantized_plans()) {
    const CachePlan plan = plan_for(method, params);
    KvCache chunked = make_cache(plan, MultiTokenMode::TokenByToken);
    const GenerateResult a = greedy_generate(m, chunked, p, opt);
    KvCache stepwise = make_cache(plan, MultiTokenMode::TokenByToken);
    GenerateOptions one = opt;
    one.prefill_token_by_token = true;
    const GenerateResult b = greedy_generate(m, stepwise, p, one);
    ASSERT_EQ(a.tokens, b.tokens) << method << " " << params;
    EXPECT_EQ(chunked.bytes().total(), stepwise.bytes().total()) << method;

    std::vector<int64_t> seq = p[0];
    seq.insert(seq.end(), a.tokens[0].begin(), a.tokens[0].end() - 1);
    KvCache masked = make_cache(plan, MultiTokenMode::TokenByToken);
    const at::Tensor logits = m.forward(at::tensor(seq, at::kLong).view({1, -1}), masked);  // [1, S, V]
    const at::Tensor next = logits.squeeze(0).narrow(0, 20, 30).argmax(-1);
    for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(next[i].item<int64_t>(), a.tokens[0][static_cast<size_t>(i)]) << method << " " << i;
    // The quantization is there: the cache holds fewer bytes than the full-precision one.
    KvCache fp = m.make_full_precision_cache();
    greedy_generate(m, fp, p, opt);
    EXPECT_LT(chunked.bytes().total(), fp.bytes().total()) << method;
  }
}

// Sequences of a batch decode exactly as they do alone (full-precision prefill, the methods'
// default), through every cache: same tokens.
TEST(GenerationThroughCache, BatchEqualsOneAtATime) {
  c10::AutoGradMode no_grad(false);
  LlamaModel m = model(at::kBFloat16);
  const auto p = prompts(3, 19, 4);
  GenerateOptions opt;
  opt.max_new_tokens = 24;
  auto plans = quantized_plans();
  plans.push_back({"fp16", "{}"});
  for (const auto& [method, params] : plans) {
    const CachePlan plan = plan_for(method, params);
    KvCache batched = make_cache(plan, multi_token_mode(plan.prefill));
    const GenerateResult all = greedy_generate(m, batched, p, opt);
    for (size_t b = 0; b < p.size(); ++b) {
      KvCache single = make_cache(plan, multi_token_mode(plan.prefill));
      const GenerateResult one = greedy_generate(m, single, {p[b]}, opt);
      EXPECT_EQ(one.tokens[0], all.tokens[b]) << method << " " << params << " sequence " << b;
    }
  }
}

// The throughput run generates exactly what greedy_generate does, and counts the cache's bytes of
// prompt + generated tokens (the last one is never fed back).
TEST(Throughput, RunGeneratesWhatGreedyGenerateDoesAndCountsTheCache) {
  c10::AutoGradMode no_grad(false);
  LlamaModel m = model(at::kBFloat16);
  ThroughputOptions opt;
  opt.prompt_len = 19, opt.gen_len = 12, opt.keep_tokens = true, opt.progress = nullptr, opt.warmup = false;
  opt.prompts = prompts(2, 19, 5);
  for (const auto& [method, params] : std::vector<std::pair<std::string, std::string>>{
           {"fp16", "{}"}, {"kivi", "{bits: 2, group: 16, residual: 16}"}}) {
    const CachePlan plan = plan_for(method, params);
    const ThroughputPoint pt = run_throughput_point(m, plan, 2, opt);
    KvCache cache = make_cache(plan, multi_token_mode(plan.prefill));
    GenerateOptions g;
    g.max_new_tokens = 12;
    const GenerateResult want = greedy_generate(m, cache, opt.prompts, g);
    EXPECT_EQ(pt.tokens, want.tokens) << method;
    EXPECT_EQ(pt.bytes.total(), cache.bytes().total()) << method;
    EXPECT_EQ(static_cast<int64_t>(pt.step_seconds.size()), 11);
    const ModelConfig c = config();
    EXPECT_EQ(pt.elements_per_kind, 2 * (19 + 11) * c.num_hidden_layers * c.num_key_value_heads * c.head_dim);
    if (method == "fp16") {
      EXPECT_DOUBLE_EQ(pt.bits_k(), 16.0);  // a bf16 model's cache
      EXPECT_DOUBLE_EQ(pt.memory_ratio(), 1.0);
    } else {
      // Keys: 16 of the 30 tokens packed at 2 + 32 / 16 = 4 bits, the other 14 at 16.
      EXPECT_DOUBLE_EQ(pt.bits_k(), (16 * 4 + 14 * 16) / 30.0);
    }
    EXPECT_GT(pt.decode_tok_s(), 0);
    EXPECT_NEAR(pt.kvmix_tok_s() / pt.generate_tok_s(), (19.0 + 12.0) / 12.0, 1e-9);
  }
}

TEST(Throughput, SyntheticFillHoldsTheSameTokensThroughTheQuantizer) {
  c10::AutoGradMode no_grad(false);
  LlamaModel m = model(at::kHalf);
  ThroughputOptions opt;
  opt.prompt_len = 40, opt.gen_len = 9, opt.fill = CacheFill::Synthetic, opt.progress = nullptr, opt.warmup = false;
  const ThroughputPoint fp = run_throughput_point(m, plan_for("fp16", "{}"), 3, opt);
  const ThroughputPoint kivi = run_throughput_point(m, plan_for("kivi", "{bits: 2, group: 16, residual: 16}"), 3, opt);
  const ModelConfig c = config();
  const int64_t elements = 3 * (40 + 8) * c.num_hidden_layers * c.num_key_value_heads * c.head_dim;
  EXPECT_EQ(fp.elements_per_kind, elements);
  EXPECT_EQ(fp.bytes.total(), 2 * elements * 2);  // fp16 K and V
  EXPECT_EQ(kivi.elements_per_kind, elements);
  EXPECT_GT(kivi.bytes.keys.packed_codes, 0);     // the synthetic prompt went through the quantizer
  // 48 tokens: keys all packed at 4 bits; values the oldest 32 packed, the newest 16 exact.
  EXPECT_DOUBLE_EQ(kivi.memory_ratio(), (48 * 4 + 32 * 4 + 16 * 16) / (2.0 * 48 * 16));
}

// A budget is checked while running: a run that goes over stops early and says so.
TEST(Throughput, ARunOverTheKvBudgetStopsEarly) {
  c10::AutoGradMode no_grad(false);
  LlamaModel m = model(at::kBFloat16);
  ThroughputOptions opt;
  opt.prompt_len = 20, opt.gen_len = 40, opt.progress = nullptr, opt.warmup = false;
  const CachePlan plan = plan_for("fp16", "{}");
  const ThroughputPoint full = run_throughput_point(m, plan, 1, opt);
  MemoryBudget budget;
  budget.kind = MemoryBudget::Kind::Kv;
  budget.bytes = full.bytes.total() * 3 / 4;
  const ThroughputPoint cut = run_throughput_point(m, plan, 1, opt, budget);
  EXPECT_TRUE(cut.over_budget);
  EXPECT_LT(cut.step_seconds.size(), full.step_seconds.size());
  EXPECT_GT(cut.bytes.total(), budget.bytes);
  EXPECT_FALSE(full.over_budget);
  EXPECT_GT(full.peak_rss, 0);  // the process's peak is measured (Linux)
  EXPECT_GE(full.peak_rss, full.rss_before);
}

// The search against measures with known boundaries: it finds the largest fitting batch, every
// fitting probe is under the budget and every other over it, and it needs few runs.
TEST(MaxBatchSearch, FindsTheBoundaryAndNeverReportsABatchOverBudget) {
  struct Case {
    std::function<int64_t(int64_t)> measure;
    int64_t budget, limit, want;
  };
  const std::vector<Case> cases = {
      {[](int64_t b) { return 100 + 7 * b; }, 1000, 4096, 128},                   // linear: (1000 - 100) / 7
      {[](int64_t b) { return 500 + 3 * b; }, 1000, 4096, 166},
      {[](int64_t b) { return 10 * b + b * b; }, 5000, 4096, 65},                 // convex: the line over-predicts
      {[](int64_t b) { return 1000 + 40 * b - (b > 20 ? 200 : 0); }, 2000, 4096, 30},  // a step down
      {[](int64_t b) { return 2000 + b; }, 1000, 4096, 0},                        // batch 1 does not fit
      {[](int64_t b) { return b; }, 1000, 64, 64},                                // the limit fits
  };
  for (const auto& c : cases) {
    std::map<int64_t, int> runs;
    const MaxBatchSearch s = search_max_batch(
        [&](int64_t b) {
          runs[b] += 1;
          return BatchProbe{c.measure(b) <= c.budget, c.measure(b)};
        },
        c.budget, c.limit);
    EXPECT_EQ(s.max_batch, c.want) << c.budget;
    for (const auto& [b, probe] : s.probes) {
      EXPECT_EQ(probe.fits, c.measure(b) <= c.budget);
      EXPECT_EQ(runs[b], 1) << "batch " << b << " ran twice";
    }
    if (c.want > 0 && c.want < c.limit) {
      EXPECT_TRUE(runs.count(c.want)) << "the answer was run";
      EXPECT_TRUE(runs.count(c.want + 1)) << "the batch after it was run";
    }
  }
  // A linear measure takes 1, 2, the prediction and the one after it.
  int probes = 0;
  search_max_batch([&](int64_t b) { ++probes; return BatchProbe{100 + 7 * b <= 1000, 100 + 7 * b}; }, 1000, 4096);
  EXPECT_LE(probes, 4);
  // A measure whose end value predicts one batch too many (the peak sits above the end): the
  // prediction misses and the batch just below it is tried next, not a bisection from 2.
  std::vector<int64_t> order;
  const MaxBatchSearch near = search_max_batch(
      [&](int64_t b) {
        order.push_back(b);
        const int64_t end = 10 * b, peak = end + 5;  // budget 300: the line says 30, peaks allow 29
        return BatchProbe{peak <= 300, peak <= 300 ? end : peak};
      },
      300, 4096);
  EXPECT_EQ(near.max_batch, 29);
  EXPECT_EQ(order, (std::vector<int64_t>{1, 2, 30, 29}));
}

// End to end on real runs: the largest batch whose KV bytes fit, its run under the budget and the
// next one's over it.
TEST(MaxBatchSearch, RealRunsRespectAKvBudget) {
  c10::AutoGradMode no_grad(false);
  LlamaModel m = model(at::kBFloat16);
  ThroughputOptions opt;
  opt.prompt_len = 16, opt.gen_len = 6, opt.progress = nullptr, opt.warmup = false;
  const CachePlan plan = plan_for("kivi", "{bits: 2, group: 4, residual: 8}");
  const int64_t one = run_throughput_point(m, plan, 1, opt).bytes.total();
  MemoryBudget budget;
  budget.kind = MemoryBudget::Kind::Kv;
  budget.bytes = one * 7 + one / 2;
  std::map<int64_t, ThroughputPoint> points;
  const MaxBatchSearch s = search_max_batch(
      [&](int64_t b) {
        ThroughputPoint pt = run_throughput_point(m, plan, b, opt, budget);
        const BatchProbe out{!pt.over_budget && pt.measured(budget) <= budget.bytes, pt.measured(budget)};
        points[b] = std::move(pt);
        return out;
      },
      budget.bytes, 64);
  ASSERT_EQ(s.max_batch, 7);
  EXPECT_LE(points.at(7).bytes.total(), budget.bytes);
  EXPECT_FALSE(points.at(7).over_budget);
  EXPECT_TRUE(points.at(8).over_budget || points.at(8).bytes.total() > budget.bytes);
}

TEST(ThroughputMethods, PresetsAndRegistryNamesWithSets) {
  test::TempDir dir;
  std::ofstream(dir / "p.yaml") << "presets:\n  kivi-2: {name: kivi, params: {bits: 2, group: 32, residual: 128}}\n"
                                   "  u4: {name: uniform, params: {bits: 4}}\n";
  auto choices = resolve_method_choices({"fp16", "kivi-2", "u4"}, {"kivi-2.residual=64", "group=16"}, dir / "p.yaml");
  ASSERT_EQ(choices.size(), 3u);
  EXPECT_EQ(choices[1].method, "kivi");
  EXPECT_EQ(choices[1].params["residual"].Scalar(), "64");
  EXPECT_EQ(choices[1].params["group"].Scalar(), "16");  // every listed method declaring it
  EXPECT_EQ(choices[2].params["group"].Scalar(), "16");
  EXPECT_EQ(choices[2].params["bits"].Scalar(), "4");
  EXPECT_NE(test::error_of([&] { resolve_method_choices({"kivi-3"}, {}, dir / "p.yaml"); }, true).find("kivi-2"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { resolve_method_choices({"fp16"}, {"bits=2"}, dir / "p.yaml"); }, true).find("bits"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { resolve_method_choices({"u4"}, {"kivi.residual=8"}, dir / "p.yaml"); }, true)
                .find("kivi"),
            std::string::npos);
  // The shipped presets resolve.
  EXPECT_EQ(resolve_method_choices({"kivi-2", "kvmix-k2.19v2.38"}, {},
                                   std::string(KVLAB_SOURCE_DIR) + "/experiments/presets/paper.yaml")[1]
                .method,
            "kvmix");
}

TEST(BenchThroughputCli, TableCsvJsonAndErrors) {
  test::TempDir dir;
  const std::string common =
      "bench throughput --shape tiny-gqa --random --dtype float16 --prompt-len 24 --gen-len 6 --threads 1 --quiet ";
  const auto r = test::run_kvlab(common + "--batch 1,2,max --memory-budget 0.0004 --budget kv --methods fp16,kivi "
                                          "--set kivi.bits=2 --set kivi.group=8 --set kivi.residual=16 --csv " +
                                     (dir / "t.csv") + " --json " + (dir / "t.json"),
                                 dir / "err");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("synthetic K/V"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kvmix = B*(P+N)/total s"), std::string::npos);
  std::ifstream csv(dir / "t.csv");
  std::string line;
  int rows = -1;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 6);  // 2 methods x 3 batch specs
  std::ifstream js(dir / "t.json");
  const nlohmann::json j = nlohmann::json::parse(js);
  ASSERT_EQ(j["points"].size(), 6u);
  for (const auto& p : j["points"]) {
    if (p["batch_spec"] != "max") continue;
    // The KIVI cache is smaller, so more sequences fit the same KV budget, and the reported run fits.
    EXPECT_LE(p["kv_bytes"].get<int64_t>(), static_cast<int64_t>(0.0004 * 1024 * 1024 * 1024));
    EXPECT_GE(p["max_batch"].get<int64_t>(), 1);
  }
  EXPECT_GT(j["points"][5]["max_batch"].get<int64_t>(), j["points"][2]["max_batch"].get<int64_t>());
  EXPECT_EQ(j["points"][0]["step_seconds"].size(), 5u);

  test::expect_one_line_error(test::run_kvlab(common + "--batch max", dir / "e1"), "--memory-budget");
  test::expect_one_line_error(test::run_kvlab(common + "--methods kivy", dir / "e2"), "kivi");
  test::expect_one_line_error(test::run_kvlab(common + "--set nosuch=1", dir / "e3"), "nosuch");
  test::expect_one_line_error(test::run_kvlab(common + "--batch 0", dir / "e4"), "--batch");
  test::expect_one_line_error(test::run_kvlab(common + "--methods kvmix-k2.19v2.38", dir / "e5"), "profile kvmix");
}

TEST(GenerateCli, MethodBatchAndCacheReport) {
  test::TempDir dir;
  ASSERT_EQ(test::run_kvlab("make-model --shape tiny-gqa --seed 2 --out " + (dir / "m"), dir / "mk").code, 0);
  const std::string base = "generate --model " + (dir / "m") + " --prompt 'In the beginning' --max-new 12 --ignore-eos ";
  const auto fp = test::run_kvlab(base, dir / "e0");
  ASSERT_EQ(fp.code, 0) << fp.err;
  EXPECT_NE(fp.err.find("cache fp16"), std::string::npos) << fp.err;
  EXPECT_NE(fp.err.find("K 32.000 bits"), std::string::npos) << fp.err;  // float32 by default
  const auto q = test::run_kvlab(base + "--dtype bfloat16 --method kivi --set bits=2 --set group=8 --set residual=16 --batch 3",
                                 dir / "e1");
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_NE(q.err.find("cache kivi (bits=2,group=8,residual=16,"), std::string::npos) << q.err;
  EXPECT_NE(q.err.find("x 3 sequences"), std::string::npos) << q.err;
  EXPECT_NE(q.err.find("peak resident"), std::string::npos) << q.err;
  test::expect_one_line_error(test::run_kvlab(base + "--method kivy", dir / "e2"), "kivi");
  test::expect_one_line_error(test::run_kvlab(base + "--chat", dir / "e3"), "chat template");
}

// The runner's task: a sweep over batches, one of them 'max' under a KV budget, lands in the store
// with its metrics, and the store exports them.
TEST(ThroughputTask, RunsInAnExperiment) {
  test::TempDir dir;
  std::ofstream(dir / "t.yaml")
      << "name: tp\ndtype: float16\nstore: " << (dir / "tp.sqlite") << "\n"
      << "models:\n  - {name: tiny, make: {shape: tiny-gqa, seed: 1}}\n"
      << "tasks:\n  - name: throughput\n    params: {prompt_len: 24, gen_len: 6, memory_budget: 0.0004, budget: kv, "
         "fill: synthetic}\n    sweep: {batch: [2, max]}\n"
      << "methods:\n  - fp16\n  - {name: kivi, params: {bits: 2, group: 8, residual: 16}}\n";
  const auto r = test::run_kvlab("run " + (dir / "t.yaml") + " --threads 1", dir / "err");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto e = test::run_kvlab("results export " + (dir / "tp.sqlite") + " --csv " + (dir / "tp.csv"), dir / "err2");
  ASSERT_EQ(e.code, 0) << e.err;
  std::ifstream in(dir / "tp.csv");
  std::stringstream all;
  all << in.rdbuf();
  const std::string csv = all.str();
  for (const char* metric : {"max_batch", "decode_tok_s", "kvmix_tok_s", "peak_memory_gib", "kv_gib", "fits"})
    EXPECT_NE(csv.find(metric), std::string::npos) << metric;
  // An impossible setting is refused before any work.
  std::ofstream(dir / "bad.yaml") << "name: bad\nmodels:\n  - {name: tiny, make: {shape: tiny-gqa}}\n"
                                  << "tasks:\n  - {name: throughput, params: {batch: max}}\nmethods: [fp16]\n";
  test::expect_one_line_error(test::run_kvlab("run " + (dir / "bad.yaml"), dir / "err3"), "memory_budget");
}

}  // namespace
}  // namespace kvlab
