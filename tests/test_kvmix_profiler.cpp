// KVmix profiler: one backward per prompt gives the same gradient norms as the reference's one
// backward per layer; the reference loss is what it says; calibration prompts are cut and drawn
// as documented; `kvlab profile kvmix` writes a plan the method accepts.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "../methods/kvmix/kvmix_calibration_data.h"
#include "../methods/kvmix/kvmix_plan_file.h"
#include "../methods/kvmix/kvmix_profiler.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/model/llama2c_import.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "cli_run.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

// Bytes as tokens (vocab 256; EOS is byte 0, BOS byte 1).
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override { return std::string(ids.begin(), ids.end()); }
  int32_t vocab_size() const override { return 256; }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return 0; }
  std::string kind() const override { return "bytes"; }
};

ModelConfig byte_config(int64_t layers) {
  ModelConfig c = test::small_config(2);
  c.vocab_size = 256;
  c.num_hidden_layers = layers;
  return c;
}

at::Tensor random_prompt(int64_t T, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  return at::randint(vocab, {1, T}, at::kLong);
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

TEST(KvmixProfiler, OneBackwardEqualsOneBackwardPerLayer) {
  const ModelConfig c = byte_config(4);
  LlamaModel m = LlamaModel::random(c, 5, {}, 0.2);
  const at::Tensor prompt = random_prompt(24, c.vocab_size, 3);
  for (auto loss : {kvmix::ProfileLoss::NextToken, kvmix::ProfileLoss::Reference}) {
    const auto fast = kvmix::gradient_norms(m, prompt, loss, 0);
    const auto ref = kvmix::per_layer_gradient_norms(m, prompt, loss, 0);
    ASSERT_EQ(fast.k.size(), 4u);
    for (size_t l = 0; l < 4; ++l) {
      ASSERT_GT(ref.k[l], 1e-8) << "vanishing gradient: the comparison would be vacuous";
      ASSERT_GT(ref.v[l], 1e-8);
      EXPECT_LT(rel(fast.k[l], ref.k[l]), 1e-5) << "layer " << l << ": " << fast.k[l] << " vs " << ref.k[l];
      EXPECT_LT(rel(fast.v[l], ref.v[l]), 1e-5) << "layer " << l << ": " << fast.v[l] << " vs " << ref.v[l];
    }
    EXPECT_NE(fast.k[0], fast.k[1]);  // layers are told apart
  }
  // The weights are left as they were found.
  for (const auto& w : m.weights().layers) EXPECT_FALSE(w.k_proj.requires_grad() || w.v_proj.requires_grad());
}

// The reference loss, computed here by hand from the logits: position t predicts token t+2, the
// last predicted position the pad id; mean over the T - 1 positions.
TEST(KvmixProfiler, ReferenceLossPredictsTwoAheadThenPad) {
  const ModelConfig c = byte_config(2);
  LlamaModel m = LlamaModel::random(c, 6, {}, 0.2);
  const at::Tensor prompt = random_prompt(9, c.vocab_size, 4);
  c10::NoGradGuard ng;
  KvCache cache = m.make_full_precision_cache();
  const at::Tensor logp = at::log_softmax(m.forward(prompt, cache)[0].to(at::kDouble), -1);  // [T, V]
  const int64_t pad = 7;
  double ref = 0, plain = 0;
  for (int64_t t = 0; t < 8; ++t) {
    const int64_t target = t + 2 < 9 ? prompt[0][t + 2].item<int64_t>() : pad;
    ref -= logp[t][target].item<double>();
    plain -= logp[t][prompt[0][t + 1].item<int64_t>()].item<double>();
  }
  EXPECT_NEAR(kvmix::prompt_loss(m, prompt, kvmix::ProfileLoss::Reference, pad).item<double>(), ref / 8, 1e-5);
  EXPECT_NEAR(kvmix::prompt_loss(m, prompt, kvmix::ProfileLoss::NextToken).item<double>(), plain / 8, 1e-5);
  EXPECT_THROW(kvmix::prompt_loss(m, prompt, kvmix::ProfileLoss::Reference, -1), Error);
}

TEST(KvmixProfiler, ScoresAreTheMeanOverPrompts) {
  const ModelConfig c = byte_config(3);
  LlamaModel m = LlamaModel::random(c, 7, {}, 0.2);
  std::vector<std::vector<int64_t>> prompts;
  std::vector<kvmix::LayerNorms> each;
  for (uint64_t s : {1, 2, 3}) {
    const at::Tensor p = random_prompt(10 + static_cast<int64_t>(s) * 3, c.vocab_size, s);
    prompts.emplace_back(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
    each.push_back(kvmix::gradient_norms(m, p, kvmix::ProfileLoss::NextToken));
  }
  kvmix::ProfileOptions opt;
  opt.progress = false;
  const auto prof = kvmix::profile_importance(m, prompts, opt);
  EXPECT_EQ(prof.prompts, 3);
  EXPECT_EQ(prof.tokens, 13 + 16 + 19);
  for (size_t l = 0; l < 3; ++l) {
    EXPECT_NEAR(prof.k_score[l], (each[0].k[l] + each[1].k[l] + each[2].k[l]) / 3, 1e-9 * prof.k_score[l]);
    EXPECT_NEAR(prof.v_score[l], (each[0].v[l] + each[1].v[l] + each[2].v[l]) / 3, 1e-9 * prof.v_score[l]);
  }
}

// A text file of 1000 bytes in windows of 100 tokens: 10 windows; 3 samples take windows 0, 3, 6.
TEST(KvmixCalibrationData, TextWindowsAreSpreadEvenly) {
  test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 1000; ++i) text += static_cast<char>('a' + (i * 7) % 26);
  std::ofstream(tmp / "calib.txt") << text;
  ByteTokenizer tok;
  kvmix::CalibrationDataOptions o;
  o.path = tmp / "calib.txt";
  o.samples = 3;
  o.max_len = 100;
  const auto p = kvmix::load_calibration_prompts(tok, o);
  EXPECT_EQ(p.kind, "text");
  EXPECT_EQ(p.available, 10);
  ASSERT_EQ(p.prompts.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    const size_t start = k * 300;
    EXPECT_EQ(std::string(p.prompts[k].begin(), p.prompts[k].end()), text.substr(start, 100)) << k;
  }
  EXPECT_EQ(p.sources[1], "tokens 300..399");
  // BOS takes one of the max_len slots.
  o.bos = true;
  const auto b = kvmix::load_calibration_prompts(tok, o);
  EXPECT_EQ(b.available, 10);  // 1000 / 99
  EXPECT_EQ(b.prompts[0].size(), 100u);
  EXPECT_EQ(b.prompts[0][0], 1);
  // More samples than windows: every window once.
  o.samples = 50;
  EXPECT_EQ(kvmix::load_calibration_prompts(tok, o).prompts.size(), 10u);
  o.max_len = 5000;
  EXPECT_THROW(kvmix::load_calibration_prompts(tok, o), Error);
}

TEST(KvmixCalibrationData, JsonlRecordsAreDrawnWithoutReplacementAndRendered) {
  test::TempDir tmp;
  {
    std::ofstream out(tmp / "task.jsonl");
    for (int i = 0; i < 20; ++i)
      out << nlohmann::json{{"context", "ctx" + std::to_string(i)}, {"input", "q" + std::to_string(i)},
                            {"dataset", "trec"}, {"answers", {"x"}}}
                 .dump()
          << "\n";
  }
  std::ofstream(tmp / "templates.json") << R"({"trec": "Classify. {context}|{input} {{literal}}"})";
  ByteTokenizer tok;
  kvmix::CalibrationDataOptions o;
  o.path = tmp / "task.jsonl";
  o.samples = 8;
  o.max_len = 10;
  const auto a = kvmix::load_calibration_prompts(tok, o);
  EXPECT_EQ(a.kind, "jsonl");
  EXPECT_EQ(a.available, 20);
  ASSERT_EQ(a.prompts.size(), 8u);
  std::set<std::string> distinct(a.sources.begin(), a.sources.end());
  EXPECT_EQ(distinct.size(), 8u);
  for (const auto& pr : a.prompts) {
    EXPECT_LE(pr.size(), 10u);
    EXPECT_EQ(std::string(pr.begin(), pr.begin() + 3), "ctx");  // default: context, blank line, input
  }
  EXPECT_EQ(kvmix::load_calibration_prompts(tok, o).sources, a.sources);  // deterministic
  o.seed = 43;
  EXPECT_NE(kvmix::load_calibration_prompts(tok, o).sources, a.sources);
  // The task's template; the whole prompt fits in max_len 100.
  o.templates = tmp / "templates.json";
  o.max_len = 100;
  const auto t = kvmix::load_calibration_prompts(tok, o);
  const std::string first(t.prompts[0].begin(), t.prompts[0].end());
  const int line = std::stoi(t.sources[0].substr(5));  // "line N" -> record N - 1
  EXPECT_EQ(first, "Classify. ctx" + std::to_string(line - 1) + "|q" + std::to_string(line - 1) + " {literal}");
  // C4-style records: the text itself; a record with neither form is an error naming its line.
  std::ofstream(tmp / "c4.jsonl") << R"({"text": "hello world", "url": "u"})" << "\n\n"
                                  << R"({"text": "second doc"})" << "\n";
  o.path = tmp / "c4.jsonl";
  o.templates.clear();
  const auto c4 = kvmix::load_calibration_prompts(tok, o);
  ASSERT_EQ(c4.prompts.size(), 2u);
  std::set<std::string> texts;
  for (const auto& pr : c4.prompts) texts.emplace(pr.begin(), pr.end());
  EXPECT_EQ(texts, (std::set<std::string>{"hello world", "second doc"}));
  std::ofstream(tmp / "odd.jsonl") << R"({"text": "fine"})" << "\n" << R"({"body": "no"})" << "\n";
  o.path = tmp / "odd.jsonl";
  try {
    kvmix::load_calibration_prompts(tok, o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("odd.jsonl line 2"), std::string::npos) << e.what();
  }
  // A template naming a field the record lacks.
  try {
    kvmix::render_template("{context} {question}", {{"context", "c"}}, "task.jsonl line 3");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("field 'question'"), std::string::npos) << e.what();
  }
}

// The faithful mode's real inputs: a LongBench task's own jsonl rendered with the official template.
TEST(KvmixCalibrationData, LongBenchRecordsUseTheOfficialTemplate) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared is absent: skipping the LongBench calibration check";
  const std::string lb = test::shared_dir() + "/data/longbench";
  ByteTokenizer tok;
  kvmix::CalibrationDataOptions o;
  o.path = lb + "/minilongbench_jsonl_noprompt/trec.jsonl";
  o.templates = lb + "/official_config/dataset2prompt.json";
  o.samples = 3;
  o.max_len = 1 << 20;  // whole prompts
  const auto p = kvmix::load_calibration_prompts(tok, o);
  ASSERT_EQ(p.prompts.size(), 3u);
  std::ifstream tin(o.templates);
  const std::string tmpl = nlohmann::json::parse(tin)["trec"].get<std::string>();
  std::ifstream din(o.path);
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(din, line);)
    if (!line.empty()) records.push_back(nlohmann::json::parse(line));
  EXPECT_EQ(p.available, static_cast<int64_t>(records.size()));
  for (size_t k = 0; k < 3; ++k) {
    const auto& rec = records[static_cast<size_t>(std::stoi(p.sources[k].substr(5)) - 1)];
    std::string expected = tmpl;  // the template with {context} and {input} substituted
    const std::string ctx = rec["context"], input = rec["input"];
    expected.replace(expected.find("{context}"), 9, ctx);
    expected.replace(expected.rfind("{input}"), 7, input);
    EXPECT_EQ(std::string(p.prompts[k].begin(), p.prompts[k].end()), expected) << p.sources[k];
  }
}

// The registered step end to end: it writes a plan whose scores are the profiler's, whose bits are
// the allocation's, and which the kvmix method accepts.
TEST(KvmixProfileStep, WritesAPlanTheMethodAccepts) {
  test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 60; ++i) text += "the quick brown fox " + std::to_string(i) + " jumps over the lazy dog\n";
  std::ofstream(tmp / "calib.txt") << text;
  const ModelConfig c = byte_config(10);
  LlamaModel m = LlamaModel::random(c, 9, {}, 0.2);
  ByteTokenizer tok;
  const auto& step = CalibrationRegistry::instance().find("profile", "kvmix");
  EXPECT_EQ(step.plan_param, "plan");
  const ParamSet p = ParamSet::resolve(
      step.params, YAML::Load("{calib: " + tmp / "calib.txt" + ", samples: 3, max_len: 48, v_avg_bits: 2.5}"), "test");
  CalibrationContext ctx{m, tok, "(random)", p, tmp / "plan.yaml", false};
  EXPECT_EQ(step.run(ctx), tmp / "plan.yaml");

  const auto plan = kvmix::read_plan_file(tmp / "plan.yaml");
  EXPECT_EQ(plan.num_layers, 10);
  EXPECT_EQ(plan.calibration["samples"].as<int>(), 3);
  EXPECT_EQ(plan.calibration["calib"].as<std::string>(), tmp / "calib.txt");
  kvmix::CalibrationDataOptions o;
  o.path = tmp / "calib.txt";
  o.samples = 3;
  o.max_len = 48;
  kvmix::ProfileOptions po;
  po.progress = false;
  const auto prof = kvmix::profile_importance(m, kvmix::load_calibration_prompts(tok, o).prompts, po);
  int k_high = 0, v_sum = 0;
  for (size_t l = 0; l < 10; ++l) {
    EXPECT_DOUBLE_EQ(*plan.layers[l].k_score, prof.k_score[l]);
    EXPECT_DOUBLE_EQ(*plan.layers[l].v_score, prof.v_score[l]);
    k_high += plan.layers[l].k_bits == 3;
    v_sum += plan.layers[l].v_bits;
    EXPECT_EQ(*plan.layers[l].k_ratio, plan.layers[l].k_bits == 4 ? 0.3 : 0.2);
  }
  EXPECT_EQ(k_high, 2);   // tiers: int(0.1 * 10) + int(0.1 * 10)
  EXPECT_EQ(v_sum, 25);   // budget: exactly 2.5 bits on average
  bool has_profile = false;
  for (const auto& [key, node] : plan.extra)
    if (key == "profile") has_profile = node["data"].as<std::string>().rfind("held-out", 0) == 0;
  EXPECT_TRUE(has_profile);

  const auto method = MethodRegistry::instance().create("kvmix", YAML::Load("{plan: " + tmp / "plan.yaml" + ", group: 4}"));
  const CachePlan cp = method->plan(c);
  cp.validate(c.num_hidden_layers, c.head_dim);
  for (size_t l = 0; l < 10; ++l) EXPECT_EQ(cp.layers[l].v.bits, plan.layers[l].v_bits);

  // Faithful data mode is a LongBench task's jsonl; a text file is refused before any work.
  const ParamSet bad = ParamSet::resolve(
      step.params, YAML::Load("{calib: " + tmp / "calib.txt" + ", data_mode: faithful}"), "test");
  CalibrationContext bad_ctx{m, tok, "(random)", bad, tmp / "plan2.yaml", false};
  EXPECT_THROW(step.run(bad_ctx), Error);
  EXPECT_FALSE(std::filesystem::exists(tmp / "plan2.yaml"));
}

// The method's premise on a real trained model (stories260K; calibration on WikiText-2 validation,
// evaluation on WikiText-2 test): at the same bit budget, giving the extra bits to the layers with
// the largest gradient scores disturbs the model less (KL to full precision) than giving them to
// the layers with the smallest scores.
TEST(KvmixStories260K, GradientRankingBeatsTheReversedRanking) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared is absent: skipping the stories260K profile";
  const std::string data = test::shared_dir() + "/data";
  test::TempDir tmp;
  convert_llama2c(data + "/models/stories260K/stories260K.bin", data + "/models/stories260K/tok512.bin", tmp.str());
  LlamaModel m = LlamaModel::load(tmp.str());
  auto tok = load_tokenizer(tmp.str());
  const auto& step = CalibrationRegistry::instance().find("profile", "kvmix");
  const ParamSet p = ParamSet::resolve(
      step.params,
      YAML::Load("{calib: " + data + "/wikitext-2/wiki.valid.tokens, samples: 8, max_len: 128, bos: true}"), "test");
  CalibrationContext ctx{m, *tok, tmp.str(), p, tmp / "plan.yaml", false};
  step.run(ctx);
  auto plan = kvmix::read_plan_file(tmp / "plan.yaml");
  for (auto& l : plan.layers) l.k_score = 1.0 / *l.k_score, l.v_score = 1.0 / *l.v_score;
  kvmix::write_plan_file(plan, tmp / "reversed.yaml");

  std::ifstream in(data + "/wikitext-2-raw/wiki.test.raw");
  std::string text(40000, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  const std::vector<int32_t> ids = tok->encode(text, false);
  PerplexityOptions opt;
  opt.ctx = 128;
  opt.max_windows = 8;
  opt.bos_id = 1;
  opt.progress = false;
  auto kl = [&](const std::string& file) {
    const auto method = MethodRegistry::instance().create(
        "kvmix", YAML::Load("{plan: " + file + ", bits_from: scores, group: 8, k_avg_bits: 2.4, v_avg_bits: 2.4}"));
    return evaluate_quantized_perplexity(m, ids, opt, method->plan(m.config())).kl_mean;
  };
  const double by_gradient = kl(tmp / "plan.yaml"), reversed = kl(tmp / "reversed.yaml");
  EXPECT_GT(by_gradient, 0.0);
  EXPECT_LT(by_gradient, 0.9 * reversed) << "gradient " << by_gradient << " reversed " << reversed;
}

// ---- the kvlab command ------------------------------------------------------------------------

using test::CliRun;

CliRun run_kvlab(const std::string& args, const test::TempDir& tmp) { return test::run_kvlab(args, tmp / "stderr.txt"); }

TEST(KvmixCli, ProfileThenEvaluate) {
  test::TempDir tmp;
  CliRun r = run_kvlab("make-model --shape tiny --out " + tmp / "tiny" + " --seed 3", tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string text = std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt";
  r = run_kvlab("profile kvmix --model " + tmp / "tiny" + " --calib " + text +
                    " --samples 2 --max-len 32 --k-avg-bits 2.5 --out " + tmp / "plan.yaml",
                tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("kvmix profile  2/2 prompts"), std::string::npos) << "no progress line: " << r.err;
  EXPECT_NE(r.err.find("ETA"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("--set plan="), std::string::npos) << r.out;
  const auto plan = kvmix::read_plan_file(tmp / "plan.yaml");
  EXPECT_EQ(plan.num_layers, 4);
  int k = 0;
  for (const auto& l : plan.layers) k += l.k_bits;
  EXPECT_EQ(k, 10);  // 2.5 bits on 4 layers

  r = run_kvlab("eval ppl --model " + tmp / "tiny" + " --text " + text +
                    " --ctx 48 --max-windows 2 --method kvmix --set plan=" + tmp / "plan.yaml" + " --set group=8 --json",
                tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["params"]["plan"], tmp / "plan.yaml");
  EXPECT_GT(j["kl_mean"].get<double>(), 0.0);

  // Bad input: one line naming the problem, non-zero exit, the existing plan untouched.
  std::ifstream before_in(tmp / "plan.yaml");
  const std::string before((std::istreambuf_iterator<char>(before_in)), {});
  r = run_kvlab("profile kvmix --model " + tmp / "tiny" + " --calib " + text + " --k-avg-bits 1.5 --out " +
                    tmp / "plan.yaml",
                tmp);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("k_avg_bits = 1.5"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  std::ifstream after_in(tmp / "plan.yaml");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(after_in)), {}), before);
}

}  // namespace
}  // namespace kvlab
