// A real pretrained model in every test run: llama2.c's stories260K, converted to HF layout, must
// reproduce the known greedy answer recorded in ../shared/data/models/stories260K/README.md.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/perplexity.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/model/llama2c_import.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/tokenizer/llama2c_tokenizer.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

std::string stories_dir() { return test::shared_dir() + "/data/models/stories260K"; }

#define REQUIRE_SHARED()                                                                     \
  if (!test::have_shared()) GTEST_SKIP() << "../shared is absent (a user's clone): skipping " \
                                            "the stories260K known-answer test"

struct KnownAnswer {
  std::string text;
  std::vector<int64_t> ids;
};

// The README's two code blocks after "## Known answer": the text, then the ids.
KnownAnswer read_known_answer() {
  std::ifstream in(stories_dir() + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  size_t at = s.find("## Known answer");
  std::vector<std::string> blocks;
  while (blocks.size() < 2) {
    const size_t open = s.find("```\n", at);
    const size_t close = s.find("\n```", open + 4);
    blocks.push_back(s.substr(open + 4, close - open - 4));
    at = close + 4;
  }
  KnownAnswer k{blocks[0], {}};
  std::istringstream ids(blocks[1]);
  for (int64_t id; ids >> id;) k.ids.push_back(id);
  return k;
}

class Stories260K : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_shared()) return;
    tmp_ = new test::TempDir();
    convert_llama2c(stories_dir() + "/stories260K.bin", stories_dir() + "/tok512.bin", tmp_->str());
  }
  static void TearDownTestSuite() { delete tmp_; }
  static test::TempDir* tmp_;
};
test::TempDir* Stories260K::tmp_ = nullptr;

TEST_F(Stories260K, ConvertedConfigIsTheArchitecture) {
  REQUIRE_SHARED();
  ModelConfig c = ModelConfig::from_dir(tmp_->str());
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(load_tokenizer(tmp_->str())->kind(), "llama2c");
}

// The README's text runs one token further than its 199 ids (it ends in " she", the 200th token),
// so 200 tokens are generated: the first 199 must be the ids, all 200 must decode to the text.
TEST_F(Stories260K, GreedyFromBosGivesTheKnownAnswer) {
  REQUIRE_SHARED();
  const KnownAnswer k = read_known_answer();
  ASSERT_EQ(k.ids.size(), 199u);
  LlamaModel m = LlamaModel::load(tmp_->str());
  auto tok = load_tokenizer(tmp_->str());
  GenerateOptions opt;
  opt.max_new_tokens = 200;
  for (bool token_by_token : {false, true}) {
    KvCache cache = m.make_full_precision_cache();
    opt.prefill_token_by_token = token_by_token;
    GenerateResult r = greedy_generate(m, cache, {{1}}, opt);
    ASSERT_EQ(r.tokens[0].size(), 200u);
    EXPECT_EQ(std::vector<int64_t>(r.tokens[0].begin(), r.tokens[0].begin() + 199), k.ids);
    std::vector<int32_t> ids(r.tokens[0].begin(), r.tokens[0].end());
    EXPECT_EQ(tok->decode(ids), k.text);
  }
}

// Batch > 1, and a prompt that is prefilled in one forward (the first 20 answer tokens): the rest
// of the answer must follow for every sequence of the batch.
TEST_F(Stories260K, BatchedContinuationOfAPrefilledPrompt) {
  REQUIRE_SHARED();
  const KnownAnswer k = read_known_answer();
  LlamaModel m = LlamaModel::load(tmp_->str());
  std::vector<int64_t> prompt = {1};
  prompt.insert(prompt.end(), k.ids.begin(), k.ids.begin() + 20);
  GenerateOptions opt;
  opt.max_new_tokens = 179;
  KvCache cache = m.make_full_precision_cache();
  GenerateResult r = greedy_generate(m, cache, {prompt, prompt, prompt}, opt);
  const std::vector<int64_t> rest(k.ids.begin() + 20, k.ids.end());
  for (const auto& seq : r.tokens) EXPECT_EQ(seq, rest);
}

TEST_F(Stories260K, TokenizerEncodesTheAnswerText) {
  REQUIRE_SHARED();
  const KnownAnswer k = read_known_answer();
  auto tok = load_tokenizer(tmp_->str());
  std::vector<int32_t> ids = tok->encode(k.text, /*add_special=*/true);
  ASSERT_EQ(ids.size(), 201u);  // BOS, the 199 ids, and " she" (see above)
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(std::vector<int64_t>(ids.begin() + 1, ids.end() - 1), k.ids);
  EXPECT_EQ(tok->decode({ids.back()}), "she");  // a lone first piece loses its dummy-prefix space
}

TEST_F(Stories260K, PerplexityWithBosPerWindowIsLow) {
  REQUIRE_SHARED();
  const KnownAnswer k = read_known_answer();
  LlamaModel m = LlamaModel::load(tmp_->str());
  auto tok = load_tokenizer(tmp_->str());
  // The model's own greedy text: every token is its argmax, so perplexity is low (well under 5),
  // against 512 for a uniform guess.
  PerplexityOptions opt;
  opt.ctx = 64;
  opt.bos_id = 1;
  opt.progress = false;
  PerplexityResult r = evaluate_perplexity(m, tok->encode(k.text), opt);
  EXPECT_EQ(r.windows, 3);  // 200 text tokens -> 3 windows of BOS + 63
  EXPECT_EQ(r.predicted, 3 * 63);
  EXPECT_LT(r.ppl(), 5.0);
  EXPECT_GT(r.ppl(), 1.0);
}

// The real model under quantized caches (WikiText-2, BOS per window): the fp16 method is the plain
// perplexity, and the KL to the full-precision model orders the methods as expected on a trained
// model: 4-bit below 2-bit, and KIVI-2 (per-channel keys) far below per-token uniform 2-bit.
TEST_F(Stories260K, QuantizedCachesOrderByError) {
  REQUIRE_SHARED();
  LlamaModel m = LlamaModel::load(tmp_->str());
  auto tok = load_tokenizer(tmp_->str());
  std::ifstream in(test::shared_dir() + "/data/wikitext-2-raw/wiki.test.raw");
  std::string text(20000, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  const std::vector<int32_t> ids = tok->encode(text, false);
  PerplexityOptions opt;
  opt.ctx = 128;
  opt.max_windows = 6;
  opt.bos_id = 1;
  opt.progress = false;
  auto run = [&](const std::string& method, const std::string& params) {
    const CachePlan plan = MethodRegistry::instance().create(method, YAML::Load(params))->plan(m.config());
    return evaluate_quantized_perplexity(m, ids, opt, plan);
  };
  const double plain = evaluate_perplexity(m, ids, opt).ppl();
  const auto fp = run("fp16", "{}");
  EXPECT_NEAR(fp.quantized.ppl(), plain, 1e-9 * plain);
  EXPECT_EQ(fp.kl_mean, 0.0);
  const auto u4 = run("uniform", "{bits: 4, group: 8}");
  const auto u2 = run("uniform", "{bits: 2, group: 8}");
  const auto k2 = run("kivi", "{bits: 2, group: 8, residual: 32}");
  EXPECT_GT(u4.kl_mean, 0.0);
  EXPECT_LT(u4.kl_mean, u2.kl_mean);
  EXPECT_LT(k2.kl_mean, 0.5 * u2.kl_mean);
  EXPECT_GT(u2.quantized.ppl(), fp.quantized.ppl());
}

// ---- tokenizer format and bad input (no ../shared needed) -------------------------------------

void write_tokenizer(const std::string& path, const std::vector<std::pair<std::string, float>>& extra) {
  std::ofstream out(path, std::ios::binary);
  int32_t max_len = 16;
  out.write(reinterpret_cast<char*>(&max_len), 4);
  auto put = [&](const std::string& p, float s) {
    int32_t n = static_cast<int32_t>(p.size());
    out.write(reinterpret_cast<char*>(&s), 4);
    out.write(reinterpret_cast<char*>(&n), 4);
    out.write(p.data(), n);
  };
  put("<unk>", 0), put("\n<s>\n", 0), put("\n</s>\n", 0);
  char hex[8];
  for (int b = 0; b < 256; ++b) snprintf(hex, sizeof hex, "<0x%02X>", b), put(hex, 0);
  for (const auto& [p, s] : extra) put(p, s);
}

// Hand-worked: pieces " " (259), "a" (260), "b" (261), "ab" (262, score 5), " a" (263, score 1),
// " ab" (264, score 10). "ab" -> [" ", "a", "b"]; best pair: "ab" (5) beats " a" (1) -> [" ", "ab"];
// then " ab" (10) -> [" ab"]. "é" has no piece: its two UTF-8 bytes fall back to 3 + 0xC3, 3 + 0xA9.
TEST(Llama2cTokenizer, HandWorkedMergesAndByteFallback) {
  test::TempDir dir;
  write_tokenizer(dir / "tok.bin", {{" ", -1}, {"a", -2}, {"b", -3}, {"ab", 5}, {" a", 1}, {" ab", 10}});
  Llama2cTokenizer tok(dir / "tok.bin");
  EXPECT_EQ(tok.vocab_size(), 265);
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{264}));
  EXPECT_EQ(tok.encode("ab", true), (std::vector<int32_t>{1, 264}));
  EXPECT_EQ(tok.encode("é"), (std::vector<int32_t>{259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok.encode(""), (std::vector<int32_t>{}));
  EXPECT_EQ(tok.decode({1, 264, 259, 3 + 0xC3, 3 + 0xA9}, true), "ab é");
  EXPECT_EQ(tok.decode(tok.encode("ba ab é")), "ba ab é");
  EXPECT_THROW(tok.decode({999}), Error);
}

TEST(Llama2cTokenizer, TruncatedFileIsAnError) {
  test::TempDir dir;
  write_tokenizer(dir / "tok.bin", {{"a", 0}});
  std::filesystem::resize_file(dir / "tok.bin", 600);
  try {
    Llama2cTokenizer tok(dir / "tok.bin", 260);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tok.bin"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

void write_model(const std::string& path, std::vector<int32_t> header, int64_t floats) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<char*>(header.data()), 28);
  std::vector<float> zeros(static_cast<size_t>(std::max<int64_t>(0, floats)), 0.01f);
  out.write(reinterpret_cast<char*>(zeros.data()), static_cast<std::streamsize>(zeros.size() * 4));
}

std::string header_error(std::vector<int32_t> header, int64_t floats) {
  test::TempDir dir;
  write_model(dir / "m.bin", header, floats);
  try {
    read_llama2c_header(dir / "m.bin");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.bin"), std::string::npos) << e.what();
    return e.what();
  }
  return "";
}

// Synthetic dims: dim 8, hidden 12, 1 layer, 2 heads, 1 kv head, vocab 260, seq 4 (head size 4).
// Floats: embed 2080 + norms 8 + wq 64 + wk 32 + wv 32 + wo 64 + norms 8 + w1/w2/w3 288 + final 8
// + rope 4*4 = 2600 (shared classifier); +2080 with a separate one.
TEST(Llama2cImport, HeaderValidation) {
  EXPECT_EQ(header_error({8, 12, 1, 2, 1, 260, 4}, 2600), "");
  EXPECT_EQ(header_error({8, 12, 1, 2, 1, -260, 4}, 2600 + 2080), "");
  EXPECT_NE(header_error({8, 12, 1, 2, 1, 260, 4}, 2599).find("truncated"), std::string::npos);
  EXPECT_NE(header_error({8, 12, 1, 2, 1, -260, 4}, 2600).find("truncated"), std::string::npos);
  EXPECT_NE(header_error({8, 12, 1, 2, 1, 260, 4}, 2601).find("trailing"), std::string::npos);
  EXPECT_NE(header_error({0, 12, 1, 2, 1, 260, 4}, 2600).find("dim"), std::string::npos);
  EXPECT_NE(header_error({8, 12, -1, 2, 1, 260, 4}, 2600).find("n_layers"), std::string::npos);
  EXPECT_NE(header_error({8, 12, 1, 2, 3, 260, 4}, 2600).find("n_kv_heads"), std::string::npos);
  test::TempDir dir;
  { std::ofstream(dir / "short.bin") << "abc"; }
  EXPECT_THROW(read_llama2c_header(dir / "short.bin"), Error);
}

// The row permutation must turn llama2.c's pair rotation into HF's half rotation: convert a
// synthetic checkpoint and check q/k after RoPE against a pair-rotating computation.
TEST(Llama2cImport, RopeLayoutPermutation) {
  test::TempDir dir;
  {
    std::vector<int32_t> header = {8, 12, 1, 2, 1, 260, 4};
    std::ofstream out(dir / "m.bin", std::ios::binary);
    out.write(reinterpret_cast<char*>(header.data()), 28);
    at::Tensor values = at::arange(2600, at::kFloat).mul(0.37).sin();
    out.write(reinterpret_cast<char*>(values.data_ptr<float>()), 2600 * 4);
  }
  write_tokenizer(dir / "tok.bin", {{" ", 0}});
  convert_llama2c(dir / "m.bin", dir / "tok.bin", dir / "hf");
  LlamaModel m = LlamaModel::load(dir / "hf");
  // wq in the file starts after embed (2080) and the attention norm (8): rows [8, 8] row-major.
  at::Tensor file = at::arange(2600, at::kFloat).mul(0.37).sin();
  at::Tensor wq_meta = file.narrow(0, 2088, 64).view({8, 8});
  at::Tensor x = at::randn({8});
  at::Tensor q_meta = at::matmul(wq_meta, x);   // pairs (2i, 2i+1) per head of 4
  at::Tensor q_hf = at::matmul(m.weights().layers[0].q_proj, x);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 2; ++i) {
      EXPECT_FLOAT_EQ(q_hf[h * 4 + i].item<float>(), q_meta[h * 4 + 2 * i].item<float>());
      EXPECT_FLOAT_EQ(q_hf[h * 4 + i + 2].item<float>(), q_meta[h * 4 + 2 * i + 1].item<float>());
    }
}

}  // namespace
}  // namespace kvlab
