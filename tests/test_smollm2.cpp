// The real SmolLM2-135M-Instruct GGUF (../shared/data/models/smollm2-135m-instruct) against HF
// transformers loading the same file (tests/data/gguf/smollm2/, made by
// scripts/make_smollm2_reference.py): config, tokenizer ids on 145 WikiText-2 test lines and the
// whole file, fp32 logits on a 64-token prompt, the greedy chat answer, and a converted checkpoint.
// Skipped when ../shared is absent.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kvlab/common/sha256.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/longbench/prompt.h"
#include "kvlab/model/gguf_model.h"
#include "kvlab/model/safetensors.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using json = nlohmann::json;

const std::string kRef = std::string(KVLAB_TEST_DATA) + "/gguf/smollm2";

std::string model_path() {
  return test::shared_dir() + "/data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const json& reference() {
  static const json j = json::parse(read_all(kRef + "/reference.json"));
  return j;
}

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(model_path())) GTEST_SKIP() << "no " << model_path() << " (../shared absent)";
  }
};

TEST_F(SmolLM2, ConfigFromMetadata) {
  const ModelConfig c = gguf_model_config(GgufFile(model_path()));
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_attention_heads, 9);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_FLOAT_EQ(static_cast<float>(c.rms_norm_eps), 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, std::optional<int64_t>(1));
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
}

TEST_F(SmolLM2, TokenizerIdsEqualTransformersOnWikiText2) {
  auto tok = load_tokenizer(model_path());
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->bos_id(), std::optional<int32_t>(1));
  EXPECT_EQ(tok->eos_id(), std::optional<int32_t>(2));
  // The README's known ids (no BOS: add_bos_token is false).
  EXPECT_EQ(tok->encode(" = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor .", true),
            (std::vector<int32_t>{446, 6356, 389, 9226, 352, 446, 3717, 6356, 389, 9226, 352, 314, 354, 2321, 4771, 3297,
                                  8552, 284, 16984, 17523, 1673}));
  const std::string text = read_all(test::shared_dir() + "/data/wikitext-2-raw/wiki.test.raw");
  std::vector<std::string> lines;
  for (size_t at = 0, nl; at <= text.size(); at = nl + 1) {
    nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(at, nl - at));
  }
  size_t checked = 0;
  for (const auto& l : reference()["lines"]) {
    const size_t i = l["line"].get<size_t>();
    ASSERT_LT(i, lines.size());
    EXPECT_EQ(tok->encode(lines[i]), l["ids"].get<std::vector<int32_t>>()) << "line " << i;
    ++checked;
  }
  EXPECT_EQ(checked, reference()["lines"].size());
  EXPECT_GE(checked, 100u);
  // The whole test split, as `eval ppl --bos none` tokenizes it, against HF tokenizers running the
  // smollm split (Digits, then GPT-2's regex) over the file's vocabulary. (transformers' GGUF
  // tokenizer ignores tokenizer.ggml.pre and differs at the 2 ids of " ½" only.)
  const std::vector<int32_t> all = tok->encode(text, false);
  std::string bytes(all.size() * 4, '\0');
  std::memcpy(bytes.data(), all.data(), bytes.size());
  EXPECT_EQ(all.size(), reference()["whole_file"]["tokens"].get<size_t>());
  EXPECT_EQ(sha256_hex(bytes), reference()["whole_file"]["sha256"].get<std::string>());
}

TEST_F(SmolLM2, ChatTemplateRendersAsTransformers) {
  const json& chat = reference()["chat"];
  const std::string rendered = longbench::apply_chat_template(longbench::detect_chat_style(model_path()),
                                                              chat["question"].get<std::string>(),
                                                              longbench::resolve_chat_system("auto", model_path()));
  EXPECT_EQ(rendered, chat["rendered"].get<std::string>());
  EXPECT_EQ(rendered,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(load_tokenizer(model_path())->encode(rendered, true), chat["prompt_ids"].get<std::vector<int32_t>>());
}

TEST_F(SmolLM2, LogitsEqualTransformersAndTheGreedyChatAnswerToo) {
  LlamaModel model = LlamaModel::load(model_path());
  SafetensorsFile ref(kRef + "/logits.safetensors");
  const at::Tensor prompt = ref.tensor("prompt_ids").to(at::kLong).unsqueeze(0);
  KvCache cache = model.make_full_precision_cache();
  const at::Tensor logits = model.forward(prompt, cache)[0];  // [64, V]
  const at::Tensor top_ids = ref.tensor("top_ids").to(at::kLong), sample_ids = ref.tensor("sample_ids").to(at::kLong);
  EXPECT_LE(test::max_abs_diff(logits.gather(1, top_ids), ref.tensor("top_logits")), 1e-3);
  EXPECT_LE(test::max_abs_diff(logits.index_select(1, sample_ids), ref.tensor("sample_logits")), 1e-3);
  // The same top-16 tokens, in order, where transformers' scores are not tied.
  EXPECT_TRUE(at::equal(std::get<1>(logits.topk(1, -1)).squeeze(1), top_ids.select(1, 0)));

  const json& chat = reference()["chat"];
  const auto ids = chat["prompt_ids"].get<std::vector<int64_t>>();
  GenerateOptions opt;
  opt.max_new_tokens = chat["max_new_tokens"].get<int64_t>();
  opt.stop_ids = model.config().eos_token_ids;
  KvCache gen_cache = model.make_full_precision_cache();
  const GenerateResult r = greedy_generate(model, gen_cache, {ids}, opt);
  auto answer = chat["answer_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(r.tokens.front(), answer);
  std::vector<int32_t> a32(r.tokens.front().begin(), r.tokens.front().end());
  EXPECT_EQ(load_tokenizer(model_path())->decode(a32, true), chat["answer"].get<std::string>());
}

TEST_F(SmolLM2, ConvertedCheckpointGivesTheSameLogits) {
  test::TempDir tmp;
  convert_gguf(model_path(), tmp.str(), at::kFloat);
  LlamaModel a = LlamaModel::load(model_path()), b = LlamaModel::load(tmp.str());
  const at::Tensor ids = at::arange(100, 132, at::kLong).unsqueeze(0);
  KvCache ca = a.make_full_precision_cache(), cb = b.make_full_precision_cache();
  EXPECT_TRUE(at::equal(a.forward(ids, ca), b.forward(ids, cb)));
  const std::string line = " The game 's battle system , the BliTZ system , is carried over directly from Valkyira Chronicles .";
  EXPECT_EQ(load_tokenizer(model_path())->encode(line), load_tokenizer(tmp.str())->encode(line));
  EXPECT_EQ(longbench::checkpoint_chat_template(tmp.str()), gguf_chat_template(GgufFile(model_path())));
}

}  // namespace
}  // namespace kvlab
