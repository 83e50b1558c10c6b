// The runner's seams: the task registry (ppl through it equals the evaluator called directly) and
// the calibration registry (a step defined only here registers and is found by verb and method).
#include <gtest/gtest.h>

#include <fstream>

#include "kvlab/common/error.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/eval/task.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

// Bytes as tokens: enough of a tokenizer for a task to run on a model with vocab 256+.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override { return std::string(ids.begin(), ids.end()); }
  int32_t vocab_size() const override { return 256; }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  std::string kind() const override { return "bytes"; }
};

CalibrationInfo test_step_info() {
  return {"test-keys-only-calibrated", "profile", "test step: writes a fixed plan",
          {ParamSpec::integer("samples", 3, "prompts", 1)}, "plan",
          [](CalibrationContext& ctx) {
            std::ofstream(ctx.out) << "samples: " << ctx.params.integer("samples") << "\n";
            return ctx.out;
          }};
}
KVLAB_REGISTER_CALIBRATION(test_step_info)

TEST(TaskRegistry, PerplexityTaskEqualsTheEvaluator) {
  test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the quick brown fox jumps over the lazy dog " + std::to_string(i) + "\n";
  std::ofstream(tmp / "text.txt") << text;

  ModelConfig c = test::small_config(2);
  c.vocab_size = 256;
  LlamaModel model = LlamaModel::random(c, 7);
  ByteTokenizer tok;
  const CachePlan plan = MethodRegistry::instance().create("kivi", YAML::Load("{group: 8, residual: 16}"))->plan(c);

  auto task = TaskRegistry::instance().create("ppl", YAML::Load("{text: text.txt, ctx: 48, max_windows: 3, bos: none}"));
  TaskContext ctx{model, tok, "(random)", plan, tmp.str(), false};
  const TaskResult r = task->run(ctx);

  PerplexityOptions opt;
  opt.ctx = 48;
  opt.max_windows = 3;
  opt.progress = false;
  const auto ids = tok.encode(text, false);
  const auto direct = evaluate_quantized_perplexity(model, ids, opt, plan);
  auto metric = [&](const std::string& n) {
    for (const auto& m : r.metrics)
      if (m.name == n) return m.value;
    ADD_FAILURE() << "no metric " << n;
    return 0.0;
  };
  EXPECT_DOUBLE_EQ(metric("ppl"), direct.quantized.ppl());
  EXPECT_DOUBLE_EQ(metric("ppl_fp16"), direct.reference.ppl());
  EXPECT_DOUBLE_EQ(metric("kl_mean"), direct.kl_mean);
  EXPECT_DOUBLE_EQ(r.bits_k, direct.bits_k());
  EXPECT_EQ(r.cache_bytes, direct.bytes.total());
  EXPECT_EQ(r.extra["windows"].get<int>(), 3);
}

TEST(TaskRegistry, ErrorsNameTheTaskAndKey) {
  const auto& reg = TaskRegistry::instance();
  try {
    reg.create("perplexity", YAML::Node());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ppl"), std::string::npos) << e.what();
  }
  try {
    reg.create("ppl", YAML::Load("{text: a.txt, ctxx: 5}"), "exp.yaml:3");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("exp.yaml:3"), std::string::npos) << m;
    EXPECT_NE(m.find("did you mean 'ctx'"), std::string::npos) << m;
  }
  EXPECT_THROW(reg.create("ppl", YAML::Node()), Error);  // text is required
}

TEST(CalibrationRegistry, StepsAreFoundByVerbAndMethod) {
  const auto& reg = CalibrationRegistry::instance();
  const auto& s = reg.find("profile", "test-keys-only-calibrated");
  EXPECT_EQ(s.plan_param, "plan");
  EXPECT_NE(reg.for_method("test-keys-only-calibrated"), nullptr);
  EXPECT_EQ(reg.for_method("kivi"), nullptr);
  try {
    reg.find("search", "test-keys-only-calibrated");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no 'search' step"), std::string::npos) << e.what();
  }
  test::TempDir tmp;
  ModelConfig c = test::small_config();
  LlamaModel model = LlamaModel::random(c, 1);
  ByteTokenizer tok;
  const ParamSet p = ParamSet::resolve(s.params, YAML::Load("{samples: 5}"), "test");
  CalibrationContext ctx{model, tok, "(random)", p, tmp / "plan.yaml", false};
  EXPECT_EQ(s.run(ctx), tmp / "plan.yaml");
  EXPECT_EQ(YAML::LoadFile(tmp / "plan.yaml")["samples"].as<int>(), 5);
}

}  // namespace
}  // namespace kvlab
