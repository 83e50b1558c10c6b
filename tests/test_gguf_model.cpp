// Dequantization, model mapping, tokenizers and conversion of GGUF files against independent
// oracles: llama.cpp's gguf.quants dequantizers, HF transformers' GGUF loader (logits),
// HF tokenizers and sentencepiece (ids); fixtures from scripts/make_gguf_fixtures.py.
#include "kvlab/model/gguf_model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_run.h"
#include "gguf_builder.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/prompt.h"
#include "kvlab/model/gguf_dequant.h"
#include "kvlab/model/gguf_file.h"
#include "kvlab/model/safetensors.h"
#include "kvlab/runner/model_source.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using json = nlohmann::json;
using test::GgufBuilder;
using test::TempDir;

const std::string kDir = std::string(KVLAB_TEST_DATA) + "/gguf";

const json& reference() {
  static const json j = [] {
    std::ifstream in(kDir + "/tiny_reference.json");
    return json::parse(in);
  }();
  return j;
}

void expect_has(const std::string& message, const std::string& needle) {
  EXPECT_NE(message.find(needle), std::string::npos) << "message: " << message << "\nexpected to contain: " << needle;
}

// ---- dequantization

TEST(GgufDequant, EveryTypeIsBitExactToGgufQuants) {
  GgufFile f(kDir + "/dequant.gguf");
  const std::vector<std::string> types = {"F32",  "F16",  "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0",
                                          "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
  for (const auto& name : types) {
    SCOPED_TRACE(name);
    EXPECT_EQ(ggml_type_name(f.tensor(name).type), name);
    const at::Tensor got = f.load(name);
    const at::Tensor want = f.load(name + ".expected");
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_EQ(got.sizes(), at::IntArrayRef({3, 512}));
    // Bit for bit, NaNs included.
    size_t differ = 0;
    const auto* a = reinterpret_cast<const uint32_t*>(got.data_ptr<float>());
    const auto* b = reinterpret_cast<const uint32_t*>(want.data_ptr<float>());
    for (int64_t i = 0; i < got.numel(); ++i) differ += a[i] != b[i];
    EXPECT_EQ(differ, 0u);
  }
}

TEST(GgufDequant, ThreadedEqualsOneThreadOnLargeRandomData) {
  std::mt19937_64 rng(7);
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  for (uint32_t id : {1u, 30u, 8u, 2u, 3u, 6u, 7u, 10u, 11u, 12u, 13u, 14u}) {
    const auto info = *ggml_type_info(id);
    SCOPED_TRACE(info.name);
    const int64_t blocks = 3001;  // several tasks, an uneven split
    std::vector<uint8_t> src(static_cast<size_t>(blocks * info.bytes));
    for (auto& b : src) b = static_cast<uint8_t>(rng());
    std::vector<float> one(static_cast<size_t>(blocks * info.block)), many(one.size());
    dequantize_blocks(info.type, src.data(), one.data(), blocks * info.block);
    dequantize_to_f32(info.type, src.data(), many.data(), blocks * info.block);
    EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * 4), 0);
  }
  at::set_num_threads(threads);
  EXPECT_EQ(dequantizable_type_names(), "F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16");
  expect_has(test::error_of([] {
               float y[256];
               uint8_t x[66] = {};
               dequantize_to_f32(GgmlType::IQ2_XXS, x, y, 256);
             }),
             "type IQ2_XXS is not supported");
}

// ---- tiny models against transformers

class GgufTinyModel : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufTinyModel, LogitsEqualTransformers) {
  const std::string name = GetParam();
  const json& m = reference()["models"][name];
  LlamaModel model = LlamaModel::load(kDir + "/" + name);
  const auto ids = m["prompt_ids"].get<std::vector<int64_t>>();
  KvCache cache = model.make_full_precision_cache();
  const at::Tensor logits = model.forward(at::tensor(ids).unsqueeze(0), cache)[0];
  SafetensorsFile ref(kDir + "/tiny_logits.safetensors");
  const at::Tensor want = ref.tensor(name);
  ASSERT_EQ(logits.sizes(), want.sizes());
  EXPECT_LT(test::max_abs_diff(logits, want), 1e-4) << "logit scale " << want.abs().max().item<float>();
}

TEST_P(GgufTinyModel, TokenizerIdsEqualTheOriginalTokenizer) {
  const std::string name = GetParam();
  const json& m = reference()["models"][name];
  auto tok = load_tokenizer(kDir + "/" + name);
  const auto& texts = m["texts"];
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    SCOPED_TRACE(text);
    const auto ids = m["ids"][i].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->encode(text), ids);
    // transformers' GGUF tokenizer agrees too, except for sentencepiece vocabularies on text that
    // starts with a space (it drops the dummy prefix there; sentencepiece and llama.cpp do not).
    if (name != "tiny_spm.gguf" || text.empty() || text[0] != ' ') {
      EXPECT_EQ(tok->encode(text), m["hf_gguf_ids"][i].get<std::vector<int32_t>>());
    }
    const std::string decoded = m.contains("decoded") ? m["decoded"][i].get<std::string>() : text;
    EXPECT_EQ(tok->decode(ids), decoded);
  }
}

TEST_P(GgufTinyModel, ConvertedCheckpointLoadsBackToTheSameModel) {
  const std::string name = GetParam();
  const std::string path = kDir + "/" + name;
  TempDir tmp;
  convert_gguf(path, tmp.str(), at::kFloat);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer_config.json", "generation_config.json"})
    EXPECT_TRUE(std::filesystem::exists(tmp / f)) << f;
  LlamaModel a = LlamaModel::load(path), b = LlamaModel::load(tmp.str());
  const json& m = reference()["models"][name];
  const at::Tensor ids = at::tensor(m["prompt_ids"].get<std::vector<int64_t>>()).unsqueeze(0);
  KvCache ca = a.make_full_precision_cache(), cb = b.make_full_precision_cache();
  EXPECT_TRUE(at::equal(a.forward(ids, ca), b.forward(ids, cb)));
  auto ta = load_tokenizer(path), tb = load_tokenizer(tmp.str());
  for (const auto& t : m["texts"]) EXPECT_EQ(ta->encode(t.get<std::string>()), tb->encode(t.get<std::string>()));
  EXPECT_EQ(ta->bos_id(), tb->bos_id());
  EXPECT_EQ(ta->eos_id(), tb->eos_id());
  EXPECT_EQ(longbench::checkpoint_chat_template(path), longbench::checkpoint_chat_template(tmp.str()));
  // bfloat16 weights: the fp32 ones rounded.
  TempDir half;
  convert_gguf(path, half.str(), at::kBFloat16);
  LoadOptions bf16;
  bf16.dtype = at::kBFloat16;
  LlamaModel c = LlamaModel::load(half.str(), bf16);
  EXPECT_TRUE(at::equal(c.weights().layers[1].q_proj, a.weights().layers[1].q_proj.to(at::kBFloat16)));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufTinyModel, ::testing::Values("tiny_llama.gguf", "tiny_qwen2.gguf", "tiny_spm.gguf"),
                         [](const auto& info) { return info.param.substr(0, info.param.find('.')); });

TEST(GgufModel, ConfigFromMetadata) {
  const ModelConfig c = gguf_model_config(GgufFile(kDir + "/tiny_llama.gguf"));
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 64);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5);
  const ModelConfig q = gguf_model_config(GgufFile(kDir + "/tiny_qwen2.gguf"));
  EXPECT_EQ(q.model_type, "qwen2");
  EXPECT_TRUE(q.attention_bias);
  EXPECT_FALSE(q.tie_word_embeddings);
}

TEST(GgufModel, ChatTemplateFromMetadata) {
  const std::string path = kDir + "/tiny_llama.gguf";
  EXPECT_EQ(longbench::detect_chat_style(path), longbench::ChatStyle::Qwen2);
  EXPECT_EQ(longbench::resolve_chat_system("auto", path), std::optional<std::string>("You are a tiny test model"));
  EXPECT_EQ(longbench::apply_chat_template(longbench::ChatStyle::Qwen2, "Hi", longbench::resolve_chat_system("auto", path)),
            "<|im_start|>system\nYou are a tiny test model<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(longbench::detect_chat_style(kDir + "/tiny_spm.gguf"), longbench::ChatStyle::None);
  // A template whose system turn is an expression renders none by default.
  EXPECT_EQ(longbench::chatml_default_system("{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}"),
            "");
  EXPECT_EQ(longbench::chatml_default_system("{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>' }}"),
            "You are a helpful assistant.");
}

TEST(GgufModel, RunnerFingerprintIsContentBased) {
  TempDir tmp;
  std::filesystem::copy_file(kDir + "/tiny_llama.gguf", tmp / "a.gguf");
  EXPECT_EQ(gguf_fingerprint(kDir + "/tiny_llama.gguf"), gguf_fingerprint(tmp / "a.gguf"));
  EXPECT_NE(gguf_fingerprint(kDir + "/tiny_llama.gguf"), gguf_fingerprint(kDir + "/tiny_qwen2.gguf"));
  {  // one byte of tensor data changed (inside the sampled first MiB)
    std::fstream f(tmp / "a.gguf", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(GgufFile(tmp / "a.gguf").data_offset() + 5));
    f.put('\x7f');
  }
  EXPECT_NE(gguf_fingerprint(kDir + "/tiny_llama.gguf"), gguf_fingerprint(tmp / "a.gguf"));
  ModelEntry e;
  e.source = ModelEntry::Source::Path;
  e.path = kDir + "/tiny_llama.gguf";
  e.name = "tiny";
  const ModelInfo info = inspect_model(e, false);
  EXPECT_EQ(info.config.num_hidden_layers, 2);
  EXPECT_EQ(info.fingerprint, gguf_fingerprint(e.path));
  EXPECT_EQ(prepare_model(e, info, tmp.str()), e.path);
}

// ---- malformed models: a small llama built byte by byte, then broken one way at a time

struct TinySpec {
  std::string arch = "llama";
  uint64_t hidden = 8, heads = 2, kv_heads = 1, ff = 16, vocab = 6;
  std::string tokenizer = "gpt2", pre = "gpt2";
  std::vector<uint64_t> q_dims = {8, 8};  // GGUF order: [in, out]
  bool drop_ffn_down = false;
  uint32_t rope_dims = 4;
};

std::string tiny_gguf(const TinySpec& s) {
  GgufBuilder b;
  const std::string a = s.arch + ".";
  b.kv_string("general.architecture", s.arch);
  b.kv_u32(a + "embedding_length", static_cast<uint32_t>(s.hidden));
  b.kv_u32(a + "block_count", 1);
  b.kv_u32(a + "feed_forward_length", static_cast<uint32_t>(s.ff));
  b.kv_u32(a + "attention.head_count", static_cast<uint32_t>(s.heads));
  b.kv_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.kv_heads));
  b.kv_u32(a + "rope.dimension_count", s.rope_dims);
  b.kv_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  b.kv_string("tokenizer.ggml.model", s.tokenizer);
  b.kv_string("tokenizer.ggml.pre", s.pre);
  b.kv_strings("tokenizer.ggml.tokens", {"a", "b", "c", "ab", "abc", "<s>"});
  b.kv_strings("tokenizer.ggml.merges", {"a b", "ab c"});
  b.kv_i32s("tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 3});
  const uint64_t D = s.hidden / s.heads;
  const auto zeros = [](std::vector<uint64_t> dims) {
    uint64_t n = 1;
    for (auto d : dims) n *= d;
    return std::vector<float>(n, 0.01f);
  };
  const auto t = [&](const std::string& name, std::vector<uint64_t> dims) { b.tensor_f32(name, dims, zeros(dims)); };
  t("token_embd.weight", {s.hidden, s.vocab});
  t("blk.0.attn_norm.weight", {s.hidden});
  t("blk.0.attn_q.weight", s.q_dims);
  t("blk.0.attn_k.weight", {s.hidden, s.kv_heads * D});
  t("blk.0.attn_v.weight", {s.hidden, s.kv_heads * D});
  t("blk.0.attn_output.weight", {s.hidden, s.hidden});
  t("blk.0.ffn_norm.weight", {s.hidden});
  t("blk.0.ffn_gate.weight", {s.hidden, s.ff});
  t("blk.0.ffn_up.weight", {s.hidden, s.ff});
  if (!s.drop_ffn_down) t("blk.0.ffn_down.weight", {s.ff, s.hidden});
  t("output_norm.weight", {s.hidden});
  return b.bytes();
}

std::string model_error(const TinySpec& s, bool tokenizer = false) {
  TempDir tmp;
  const std::string path = tmp / "bad.gguf";
  {
    std::ofstream out(path, std::ios::binary);
    out << tiny_gguf(s);
  }
  const std::string m = test::error_of(
      [&] {
        if (tokenizer) load_tokenizer(path);
        else LlamaModel::load(path);
      },
      true);
  EXPECT_EQ(m.rfind(path + ": ", 0), 0u) << m;
  return m;
}

TEST(GgufModel, TheBuiltModelLoads) {
  TempDir tmp;
  std::ofstream(tmp / "ok.gguf", std::ios::binary) << tiny_gguf({});
  LlamaModel m = LlamaModel::load(tmp / "ok.gguf");
  EXPECT_EQ(m.config().vocab_size, 6);
  EXPECT_TRUE(m.config().tie_word_embeddings);
  auto tok = load_tokenizer(tmp / "ok.gguf");
  EXPECT_EQ(tok->encode("abcab"), (std::vector<int32_t>{4, 3}));
}

TEST(GgufModel, MalformedModelsNameTheTensorOrKey) {
  TinySpec s;
  s.q_dims = {8, 6};
  expect_has(model_error(s), "tensor 'blk.0.attn_q.weight' has shape [6, 8] but the metadata implies [8, 8]");
  s = {};
  s.drop_ffn_down = true;
  expect_has(model_error(s), "no tensor 'blk.0.ffn_down.weight'");
  s = {};
  s.arch = "gemma";
  expect_has(model_error(s), "metadata key 'general.architecture': architecture 'gemma' is not supported");
  s = {};
  s.rope_dims = 2;
  expect_has(model_error(s), "metadata key 'llama.rope.dimension_count': 2 rotary dimensions of a head of 4");
  s = {};
  s.heads = 3;  // head_dim 8 / 3 = 2, so Q should be [3 * 2, 8]
  s.rope_dims = 2;
  expect_has(model_error(s), "tensor 'blk.0.attn_q.weight' has shape [8, 8] but the metadata implies [6, 8]");
  s = {};
  s.pre = "mystery";
  expect_has(model_error(s, true), "metadata key 'tokenizer.ggml.pre': pre-tokenizer 'mystery' is not supported");
  s = {};
  s.tokenizer = "bert";
  expect_has(model_error(s, true), "metadata key 'tokenizer.ggml.model': tokenizer 'bert' is not supported");
}

TEST(GgufCli, ConvertEvalAndChatOnAGgufFile) {
  TempDir tmp;
  const std::string model = kDir + "/tiny_llama.gguf", err = tmp / "stderr.txt";
  test::CliRun r = test::run_kvlab("convert gguf --model " + model + " --out " + tmp / "hf" + " --dtype bfloat16", err);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_has(r.out, "wrote " + tmp / "hf" + ": llama, 2 layers, hidden 32");
  expect_has(r.out, "bfloat16");
  const std::string text = std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt";
  r = test::run_kvlab("eval ppl --model " + model + " --text " + text + " --ctx 64 --max-windows 2 --bos none --json", err);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_has(r.out, "\"ppl\"");
  r = test::run_kvlab("generate --model " + model + " --chat --prompt Hi --max-new 4 --ignore-eos --ids", err);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_has(r.out, "ids: ");
  test::expect_one_line_error(test::run_kvlab("generate --model " + kDir + "/tiny_spm.gguf --chat --prompt Hi", err),
                              "has no chat template");
  {
    std::ofstream bad(tmp / "bad.gguf", std::ios::binary);
    bad << "GGUF" << std::string(3, '\0');
  }
  test::expect_one_line_error(test::run_kvlab("eval ppl --model " + tmp / "bad.gguf" + " --text " + text, err),
                              tmp / "bad.gguf" + ": truncated file: version");
  test::expect_one_line_error(test::run_kvlab("convert gguf --model " + kDir + "/dequant.gguf --out " + tmp / "x", err),
                              "architecture 'kvlab-test' is not supported");
  EXPECT_FALSE(std::filesystem::exists(tmp / "x"));  // nothing written for a file that cannot convert
}

}  // namespace
}  // namespace kvlab
