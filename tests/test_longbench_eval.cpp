// LongBench generation end to end on a tiny random model with a byte tokenizer: batching equal-
// length prompts changes nothing, the written predictions score as the run scored them, the
// cache's bytes are accounted per token held, and the runner's task reports the same numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "byte_tokenizer.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/longbench/evaluate.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "test_helpers.h"

namespace kvlab::longbench {
namespace {

ModelConfig byte_config() {
  ModelConfig c = test::small_config(2);
  c.vocab_size = 256;
  return c;
}

// trec: four prompts of one length (batchable) and one longer; passage_count: three lengths;
// qasper: two records longer than the budget used below.
void write_data(const std::string& dir) {
  const std::string classes = R"(["City", "Country", "Date"])";
  std::ofstream trec(dir + "/trec.jsonl");
  for (const char* q : {"Where is Rome?", "When was it ?", "Which nation?", "Who built it?", "What is the longest river?"})
    trec << R"({"input": "Question: )" << q << R"(\nType:", "context": "Question: Where is Oslo?\nType: City", )"
         << R"("answers": ["City"], "all_classes": )" << classes << R"(, "length": 3000})" << "\n";
  std::ofstream count(dir + "/passage_count.jsonl");
  for (int i = 1; i <= 3; ++i)
    count << R"({"input": "", "context": ")" << std::string(static_cast<size_t>(10 * i), 'p')
          << R"(", "answers": [")" << i << R"("], "all_classes": null, "length": )" << 5000 * i << "}\n";
  std::ofstream qasper(dir + "/qasper.jsonl");
  for (int i = 0; i < 2; ++i)
    qasper << R"({"input": "What?", "context": ")" << std::string(400, static_cast<char>('a' + i))
           << R"(", "answers": ["yes"], "all_classes": null, "length": 100})" << "\n";
}

class LongBenchEval : public ::testing::Test {
 protected:
  LongBenchEval() : model_(LlamaModel::random(byte_config(), 11)) { write_data(tmp_.str()); }
  EvalOptions options(const std::string& out) const {
    EvalOptions o;
    o.data_dir = tmp_.str();
    o.tasks = {"trec", "passage_count", "qasper"};
    o.max_length = 200;
    o.max_new_tokens = 4;
    o.out_dir = out;
    o.progress = false;
    return o;
  }
  CachePlan plan(const std::string& method, const std::string& params) const {
    return MethodRegistry::instance().create(method, YAML::Load(params))->plan(model_.config());
  }
  static std::string read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  test::TempDir tmp_;
  test::ByteTokenizer tok_;
  LlamaModel model_;
};

TEST_F(LongBenchEval, BatchingEqualLengthPromptsChangesNothing) {
  const CachePlan p = plan("kivi", "{group: 8, residual: 16}");
  EvalOptions one = options(tmp_ / "one"), four = options(tmp_ / "four");
  four.batch = 4;
  const EvalResult a = evaluate_longbench(model_, tok_, p, one);
  const EvalResult b = evaluate_longbench(model_, tok_, p, four);
  for (const char* task : {"trec", "passage_count", "qasper"}) {
    const std::string file = std::string("/") + task + ".jsonl";
    EXPECT_EQ(read(tmp_ / "one" + file), read(tmp_ / "four" + file)) << task;
    EXPECT_FALSE(read(tmp_ / "one" + file).empty());
  }
  ASSERT_EQ(a.tasks.size(), 3u);
  for (size_t t = 0; t < 3; ++t) EXPECT_EQ(a.tasks[t].score.score, b.tasks[t].score.score);
  EXPECT_EQ(a.bytes.total(), b.bytes.total());  // the same tokens held, in other groupings
  EXPECT_EQ(a.elements_per_kind, b.elements_per_kind);
  EXPECT_LT(b.max_cache_bytes, 4 * a.max_cache_bytes + 1);
  EXPECT_GT(b.max_cache_bytes, a.max_cache_bytes);  // four trec prompts shared one cache
}

TEST_F(LongBenchEval, WrittenPredictionsScoreAsTheRunScoredThem) {
  const EvalResult r = evaluate_longbench(model_, tok_, plan("fp16", "{}"), options(tmp_ / "preds"));
  const DirectoryScores d = score_prediction_dir(tmp_ / "preds");
  ASSERT_EQ(d.tasks.size(), 3u);
  for (const auto& t : r.tasks) {
    const auto it = std::find_if(d.tasks.begin(), d.tasks.end(), [&](const TaskScore& s) { return s.task == t.score.task; });
    ASSERT_NE(it, d.tasks.end());
    EXPECT_EQ(it->score, t.score.score) << t.score.task;
    EXPECT_EQ(it->per_record, t.score.per_record) << t.score.task;
  }
  EXPECT_EQ(d.average, r.average);
  // Records keep their answers and lengths; the records' order is the data's.
  const auto back = read_predictions(tmp_ / "preds/passage_count.jsonl");
  ASSERT_EQ(back.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(back[static_cast<size_t>(i)].answers, std::vector<std::string>{std::to_string(i + 1)});
    EXPECT_EQ(*back[static_cast<size_t>(i)].length, 5000 * (i + 1));
  }
}

TEST_F(LongBenchEval, CacheBytesAreCountedPerTokenHeld) {
  const EvalOptions o = options("");
  const EvalResult fp = evaluate_longbench(model_, tok_, plan("fp16", "{}"), o);
  // No stop ids: every record generates max_new tokens, of which all but the last are fed back.
  // Tokens held per record = prompt + 3; numbers per kind = layers * kv_heads * head_dim * tokens.
  const ModelConfig& c = model_.config();
  int64_t tokens = 0;
  for (const auto& t : fp.tasks) {
    EXPECT_EQ(t.generated_tokens, 4 * t.score.records);
    tokens += t.prompt_tokens + 3 * t.score.records;
  }
  EXPECT_EQ(fp.elements_per_kind, c.num_hidden_layers * c.num_key_value_heads * c.head_dim * tokens);
  EXPECT_DOUBLE_EQ(fp.bits_k(), 32.0);  // the fp32 model's cache holds fp32
  EXPECT_DOUBLE_EQ(fp.memory_ratio(), 2.0);
  EXPECT_EQ(fp.tasks[2].truncated, 2);  // qasper's prompts exceed 200 tokens
  EXPECT_EQ(fp.tasks[0].truncated, 0);
  EXPECT_EQ(fp.tasks[2].max_length, 200);

  const EvalResult q = evaluate_longbench(model_, tok_, plan("uniform", "{bits: 4, group: 8}"), o);
  EXPECT_EQ(q.elements_per_kind, fp.elements_per_kind);
  // Uniform 4-bit with fp16 scale and zero per 8 channels: 4 + 32 / 8 = 8 bits per number.
  EXPECT_NEAR(q.bits_k(), 8.0, 1e-9);
  EXPECT_NEAR(q.bits_v(), 8.0, 1e-9);
}

TEST_F(LongBenchEval, BudgetDefaultsToContextMinusGenerationLength) {
  EvalOptions o = options("");
  o.max_length = 0;
  o.tasks = {"trec"};
  const EvalResult r = evaluate_longbench(model_, tok_, plan("fp16", "{}"), o);
  EXPECT_EQ(r.tasks[0].max_length, model_.config().max_position_embeddings - 4);
  o.max_new_tokens = model_.config().max_position_embeddings;  // leaves no room
  EXPECT_THROW(evaluate_longbench(model_, tok_, plan("fp16", "{}"), o), Error);
  o = options("");
  o.tasks = {"gov_report"};  // no file: fails before generating
  EXPECT_THROW(evaluate_longbench(model_, tok_, plan("fp16", "{}"), o), Error);
}

TEST_F(LongBenchEval, RunnerTaskReportsTheSameNumbers) {
  const CachePlan p = plan("kivi", "{group: 8, residual: 16}");
  auto task = TaskRegistry::instance().create(
      "longbench", YAML::Load("{data: " + tmp_.str() + ", tasks: 'trec,qasper', max_length: 200, max_new_tokens: 4}"));
  TaskContext ctx{model_, tok_, "", p, "", false};
  const TaskResult r = task->run(ctx);
  EvalOptions o = options("");
  o.tasks = {"trec", "qasper"};
  const EvalResult e = evaluate_longbench(model_, tok_, p, o);
  ASSERT_EQ(r.metrics.size(), 3u);
  EXPECT_EQ(r.metrics[0].name, "longbench/trec");
  EXPECT_EQ(r.metrics[0].value, e.tasks[0].score.score);
  EXPECT_EQ(r.metrics[1].name, "longbench/qasper");
  EXPECT_EQ(r.metrics[2].name, "longbench/avg");
  EXPECT_EQ(r.metrics[2].value, e.average);
  EXPECT_DOUBLE_EQ(r.bits_k, e.bits_k());
  EXPECT_EQ(r.cache_bytes, e.max_cache_bytes);
  EXPECT_EQ(r.extra["chat_template"], "none");
  EXPECT_EQ(r.extra["tasks"]["qasper"]["truncated"], 2);

  auto e_task = TaskRegistry::instance().create(
      "longbench", YAML::Load("{data: " + tmp_.str() + ", tasks: passage_count, e: true, max_new_tokens: 2}"));
  std::filesystem::copy_file(tmp_ / "passage_count.jsonl", tmp_ / "passage_count_e.jsonl");
  const TaskResult re = e_task->run(ctx);
  std::vector<std::string> names;
  for (const auto& m : re.metrics) names.push_back(m.name);
  // Lengths 5000, 10000, 15000: buckets 4-8k and 8k+; the empty 0-4k bucket is not reported.
  EXPECT_EQ(names, (std::vector<std::string>{"longbench/passage_count", "longbench_e/passage_count/4-8k",
                                             "longbench_e/passage_count/8k+", "longbench/avg"}));

  EXPECT_THROW(TaskRegistry::instance().create("longbench", YAML::Load("{tasks: trec}")), Error);  // no data
  EXPECT_THROW(TaskRegistry::instance().create("longbench", YAML::Load("{data: x, tasks: nope}")), Error);
}

TEST(Generate, MinNewTokensMasksStopIdsAtFirst) {
  ModelConfig c = byte_config();
  LlamaModel model = LlamaModel::random(c, 5);
  const std::vector<std::vector<int64_t>> prompt = {{10, 20, 30, 40}};
  KvCache ref = model.make_full_precision_cache();
  at::Tensor logits = model.forward(at::tensor(prompt[0], at::kLong).view({1, 4}), ref, std::nullopt, true);
  const auto top2 = std::get<1>(logits.reshape({-1}).topk(2));
  const int64_t first = top2[0].item<int64_t>(), second = top2[1].item<int64_t>();

  GenerateOptions opt;
  opt.max_new_tokens = 3;
  opt.stop_ids = {first};
  KvCache a = model.make_full_precision_cache();
  EXPECT_EQ(greedy_generate(model, a, prompt, opt).tokens[0], std::vector<int64_t>{first});  // stops at once
  opt.min_new_tokens = 1;
  KvCache b = model.make_full_precision_cache();
  const auto out = greedy_generate(model, b, prompt, opt).tokens[0];
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out[0], second);  // the stop id was masked: the runner-up is taken
}

}  // namespace
}  // namespace kvlab::longbench
