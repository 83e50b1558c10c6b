// Passkey and needle prompts: exact length, determinism by seed, the needle where the depth says,
// exact-match scoring, and generation through a quantized cache with its bytes accounted.
#include <gtest/gtest.h>

#include "byte_tokenizer.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/passkey.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/llama2c_import.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

std::string text(const Tokenizer& tok, const std::vector<int32_t>& ids, int64_t from, int64_t n) {
  return tok.decode(std::vector<int32_t>(ids.begin() + from, ids.begin() + from + n), true);
}

TEST(Passkey, ExactLengthNeedleAtItsPositionDeterministicBySeed) {
  test::ByteTokenizer tok;
  for (int64_t length : {300, 1000, 4000}) {
    for (double depth : {0.0, 0.3, 0.5, 1.0}) {
      SyntheticOptions o;
      o.context_length = length;
      o.depth = depth;
      o.seed = 42;
      const SyntheticSample s = make_synthetic_sample(SyntheticKind::Passkey, tok, o, 3);
      ASSERT_EQ(static_cast<int64_t>(s.ids.size()), length);
      EXPECT_EQ(s.answer.size(), 5u);
      // The byte tokenizer adds no space of its own, so every piece starts with one.
      EXPECT_EQ(text(tok, s.ids, s.needle_position, s.needle_tokens),
                " The pass key is " + s.answer + ". Remember it. " + s.answer + " is the pass key.");
      const std::string all = tok.decode(s.ids, true);
      EXPECT_EQ(all.rfind("There is a pass key hidden", 0), 0u);
      EXPECT_EQ(all.substr(all.size() - 38), " What is the pass key? The pass key is");
      // The needle sits at a filler sentence boundary within half a sentence (<= 13 bytes) of the target.
      const double want = depth * static_cast<double>(s.filler_tokens);
      EXPECT_LE(std::abs(s.depth * s.filler_tokens - want), 13.0) << length << " " << depth;
      if (depth == 0.0 || depth == 1.0) {
        EXPECT_EQ(s.depth, depth);
      }
      // Inside the filler, the needle follows a whole sentence (at depth 1 the last one may be cut).
      if (depth > 0.0 && depth < 1.0) {
        EXPECT_EQ(text(tok, s.ids, s.needle_position - 1, 1), ".");
      }
      // Same seed and index: the same prompt; another index or seed: another key.
      EXPECT_EQ(make_synthetic_sample(SyntheticKind::Passkey, tok, o, 3).ids, s.ids);
      EXPECT_NE(make_synthetic_sample(SyntheticKind::Passkey, tok, o, 4).answer, s.answer);
      o.seed = 43;
      EXPECT_NE(make_synthetic_sample(SyntheticKind::Passkey, tok, o, 3).answer, s.answer);
    }
  }
}

TEST(Passkey, ErrorsForImpossibleSettings) {
  test::ByteTokenizer tok;
  SyntheticOptions o;
  o.context_length = 100;  // the intro alone is longer
  try {
    make_synthetic_sample(SyntheticKind::Passkey, tok, o, 0);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context_length 100 is too short"), std::string::npos) << e.what();
  }
  o.context_length = 1000;
  o.depth = 1.5;
  EXPECT_THROW(make_synthetic_sample(SyntheticKind::Passkey, tok, o, 0), Error);
  o.depth = 0.5;
  o.digits = 19;
  EXPECT_THROW(make_synthetic_sample(SyntheticKind::Passkey, tok, o, 0), Error);
}

TEST(Needle, PlacedAfterASentenceEndOfTheHaystack) {
  test::ByteTokenizer tok;
  SyntheticOptions o;
  o.context_length = 2000;
  o.depth = 0.6;
  o.seed = 1;
  o.haystack = "Alpha beta gamma delta. Epsilon zeta eta theta iota. Kappa lambda mu.";
  const SyntheticSample s = make_synthetic_sample(SyntheticKind::Needle, tok, o, 0);
  ASSERT_EQ(s.ids.size(), 2000u);
  EXPECT_EQ(s.answer.size(), 7u);
  const std::string needle = text(tok, s.ids, s.needle_position, s.needle_tokens);
  EXPECT_EQ(needle.rfind(" The secret number of the ", 0), 0u) << needle;
  EXPECT_NE(needle.find(" is " + s.answer + "."), std::string::npos) << needle;
  EXPECT_EQ(text(tok, s.ids, s.needle_position - 1, 1), ".");
  EXPECT_LE(std::abs(s.depth - 0.6), 64.0 / s.filler_tokens);
  // The haystack is the given text (wrapped around), the question names the needle's thing.
  const std::string all = tok.decode(s.ids, true);
  EXPECT_NE(all.find("Kappa lambda mu. Alpha beta"), std::string::npos);
  const std::string thing = needle.substr(26, needle.find(" is ") - 26);
  const std::string question = " What is the secret number of the " + thing + "? The secret number of the " + thing + " is";
  ASSERT_GT(all.size(), question.size());
  EXPECT_EQ(all.substr(all.size() - question.size()), question);
  EXPECT_EQ(make_synthetic_sample(SyntheticKind::Needle, tok, o, 0).ids, s.ids);
  o.haystack.clear();  // built-in prose
  EXPECT_EQ(make_synthetic_sample(SyntheticKind::Needle, tok, o, 0).ids.size(), 2000u);
}

TEST(Passkey, ExactMatchOfTheFirstDigitRun) {
  EXPECT_TRUE(synthetic_match(" 12345. Remember it.", "12345"));  // what an oracle answers
  EXPECT_TRUE(synthetic_match("The pass key is 12345", "12345"));
  EXPECT_FALSE(synthetic_match(" 1234", "12345"));
  EXPECT_FALSE(synthetic_match(" 123456", "12345"));
  EXPECT_FALSE(synthetic_match(" 99 then 12345", "12345"));
  EXPECT_FALSE(synthetic_match("", "12345"));
}

// With a real SentencePiece-style tokenizer (stories260K's), pieces join with its own spaces.
TEST(Passkey, RealTokenizerPromptReadsAsText) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared absent: no stories260K tokenizer";
  test::TempDir tmp;
  const std::string models = test::shared_dir() + "/data/models/stories260K";
  convert_llama2c(models + "/stories260K.bin", models + "/tok512.bin", tmp.str());
  auto tok = load_tokenizer(tmp.str());
  SyntheticOptions o;
  o.context_length = 512;
  const SyntheticSample s = make_synthetic_sample(SyntheticKind::Passkey, *tok, o, 0);
  ASSERT_EQ(s.ids.size(), 512u);
  EXPECT_EQ(s.ids[0], *tok->bos_id());
  const std::string all = tok->decode(s.ids, true);
  EXPECT_NE(all.find(". The pass key is " + s.answer + ". Remember it."), std::string::npos) << all;
  EXPECT_EQ(all.substr(all.size() - 38), " What is the pass key? The pass key is");
}

TEST(Passkey, EvaluationAndTaskThroughAQuantizedCache) {
  ModelConfig c = test::small_config(2);
  c.vocab_size = 256;
  c.max_position_embeddings = 512;
  LlamaModel model = LlamaModel::random(c, 3);
  test::ByteTokenizer tok;
  const CachePlan plan = MethodRegistry::instance().create("kivi", YAML::Load("{group: 8, residual: 16}"))->plan(c);

  SyntheticEvalOptions opt;
  opt.sample.context_length = 300;
  opt.samples = 3;
  opt.batch = 2;
  opt.max_new_tokens = 5;
  opt.progress = false;
  const SyntheticEvalResult r = evaluate_synthetic(model, tok, plan, opt);
  ASSERT_EQ(r.samples, 3);
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_EQ(r.answers[static_cast<size_t>(i)], make_synthetic_sample(SyntheticKind::Passkey, tok, opt.sample, i).answer);
  int64_t correct = 0;
  for (size_t i = 0; i < 3; ++i) correct += synthetic_match(r.predictions[i], r.answers[i]);
  EXPECT_EQ(r.correct, correct);
  // Tokens held per sample: 300 prompt + 4 fed-back generated tokens.
  EXPECT_EQ(r.elements_per_kind, 3 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 304);
  EXPECT_GT(r.bits_k(), 2.0);
  EXPECT_LT(r.bits_k(), 16.0);

  for (const char* name : {"passkey", "needle"}) {
    auto task = TaskRegistry::instance().create(
        name, YAML::Load("{context_length: 300, samples: 3, batch: 2, max_new_tokens: 5}"));
    TaskContext ctx{model, tok, "", plan, "", false};
    const TaskResult t = task->run(ctx);
    ASSERT_EQ(t.metrics.size(), 1u);
    EXPECT_EQ(t.metrics[0].name, std::string(name) + "/acc");
    if (std::string(name) == "passkey") {
      EXPECT_EQ(t.metrics[0].value, r.accuracy());
      EXPECT_DOUBLE_EQ(t.bits_k, r.bits_k());
      EXPECT_EQ(t.cache_bytes, r.max_cache_bytes);
    }
    EXPECT_EQ(t.extra["answers"].size(), 3u);
  }
  EXPECT_THROW(TaskRegistry::instance().create("passkey", YAML::Load("{depth: 2}")), Error);
}

}  // namespace
}  // namespace kvlab
