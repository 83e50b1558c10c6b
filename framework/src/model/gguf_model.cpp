// GGUF -> ModelConfig, weights, tokenizer, HF checkpoint. See kvlab/model/gguf_model.h.
#include "kvlab/model/gguf_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../tokenizer/byte_level.h"
#include "../tokenizer/split_patterns.h"
#include "kvlab/common/error.h"
#include "kvlab/model/dtype.h"
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "kvlab/tokenizer/llama2c_tokenizer.h"
#include "kvlab/tokenizer/sentencepiece_model_writer.h"

namespace kvlab {
namespace {

using json = nlohmann::json;

// llama.cpp's token types (tokenizer.ggml.token_type), the same numbers as SentencePiece's.
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string architecture(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2")
    f.fail_key("general.architecture", fmt::format("architecture '{}' is not supported (supported: llama, qwen2)", arch));
  return arch;
}

int64_t positive(const GgufFile& f, const std::string& key) {
  const int64_t v = f.get_int(key);
  if (v <= 0) f.fail_key(key, fmt::format("must be positive, got {}", v));
  return v;
}

// The tensor names of layer l in GGUF and in the runtime.
std::string blk(int64_t l, const char* name) { return "blk." + std::to_string(l) + "." + name; }

}  // namespace

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string arch = architecture(f);
  const std::string p = arch + ".";
  ModelConfig c;
  c.model_type = arch;
  c.hidden_size = positive(f, p + "embedding_length");
  c.num_hidden_layers = positive(f, p + "block_count");
  c.intermediate_size = positive(f, p + "feed_forward_length");
  c.num_attention_heads = positive(f, p + "attention.head_count");
  c.num_key_value_heads = f.has(p + "attention.head_count_kv") ? positive(f, p + "attention.head_count_kv")
                                                                : c.num_attention_heads;
  c.head_dim = f.has(p + "attention.key_length") ? positive(f, p + "attention.key_length")
                                                  : c.hidden_size / c.num_attention_heads;
  if (f.has(p + "attention.value_length") && f.get_int(p + "attention.value_length") != c.head_dim)
    f.fail_key(p + "attention.value_length",
               fmt::format("{} differs from the key length {} (not supported)", f.get_int(p + "attention.value_length"),
                           c.head_dim));
  if (f.has(p + "rope.dimension_count") && f.get_int(p + "rope.dimension_count") != c.head_dim)
    f.fail_key(p + "rope.dimension_count",
               fmt::format("{} rotary dimensions of a head of {} (partial RoPE is not supported)",
                           f.get_int(p + "rope.dimension_count"), c.head_dim));
  c.max_position_embeddings = f.has(p + "context_length") ? positive(f, p + "context_length") : 2048;
  c.rms_norm_eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
  c.rope_theta = f.has(p + "rope.freq_base") ? f.get_float(p + "rope.freq_base") : 10000.0;
  if (f.has(p + "rope.scaling.type")) {
    const std::string type = f.get_string(p + "rope.scaling.type");
    if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::Linear;
      c.rope_scaling.factor = f.get_float(p + "rope.scaling.factor");
    } else if (type != "none") {
      f.fail_key(p + "rope.scaling.type", fmt::format("RoPE scaling '{}' is not supported (supported: none, linear)", type));
    }
  }
  if (f.find_tensor("rope_freqs.weight"))
    fail("{}: tensor 'rope_freqs.weight' (Llama-3.1-style RoPE frequency factors) is not supported", f.path());
  if (f.has(p + "vocab_size")) c.vocab_size = positive(f, p + "vocab_size");
  else if (f.has("tokenizer.ggml.tokens")) c.vocab_size = static_cast<int64_t>(f.get_strings("tokenizer.ggml.tokens").size());
  else if (const auto* t = f.find_tensor("token_embd.weight"); t && t->dims.size() == 2) c.vocab_size = t->dims[1];
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.attention_bias = arch == "qwen2";
  if (f.has("tokenizer.ggml.bos_token_id")) c.bos_token_id = f.get_int("tokenizer.ggml.bos_token_id");
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (!f.has(key)) continue;
    const int64_t id = f.get_int(key);
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(id);
  }
  c.validate(f.path() + " (GGUF metadata)");
  return c;
}

LlamaModel load_gguf_model(const GgufFile& f, const LoadOptions& opt) {
  const ModelConfig c = gguf_model_config(f);
  const bool permute_qk = c.model_type == "llama";
  // Check every shape before dequantizing anything.
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  expected.push_back({"token_embd.weight", {c.vocab_size, H}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    expected.push_back({blk(l, "attn_norm.weight"), {H}});
    expected.push_back({blk(l, "attn_q.weight"), {c.q_dim(), H}});
    expected.push_back({blk(l, "attn_k.weight"), {c.kv_dim(), H}});
    expected.push_back({blk(l, "attn_v.weight"), {c.kv_dim(), H}});
    if (c.attention_bias) {
      expected.push_back({blk(l, "attn_q.bias"), {c.q_dim()}});
      expected.push_back({blk(l, "attn_k.bias"), {c.kv_dim()}});
      expected.push_back({blk(l, "attn_v.bias"), {c.kv_dim()}});
    }
    expected.push_back({blk(l, "attn_output.weight"), {H, c.q_dim()}});
    expected.push_back({blk(l, "ffn_norm.weight"), {H}});
    expected.push_back({blk(l, "ffn_gate.weight"), {I, H}});
    expected.push_back({blk(l, "ffn_up.weight"), {I, H}});
    expected.push_back({blk(l, "ffn_down.weight"), {H, I}});
  }
  expected.push_back({"output_norm.weight", {H}});
  if (!c.tie_word_embeddings) expected.push_back({"output.weight", {c.vocab_size, H}});
  for (const auto& [name, shape] : expected) {
    const GgufTensorInfo* t = f.find_tensor(name);
    if (!t) fail("{}: no tensor '{}' (required by the {} metadata)", f.path(), name, c.model_type);
    if (t->shape() != shape)
      fail("{}: tensor '{}' has shape {} but the metadata implies {}", f.path(), name, shape_str(t->shape()),
           shape_str(shape));
  }

  // Weights for the CPU are computed on in fp32 by default; each is dequantized straight into it.
  const auto get = [&](const std::string& name) { return f.load(name, opt.dtype); };
  // llama.cpp's row order within a head is (pair j, half i) -> row 2j + i; HF's is i * D/2 + j.
  const auto unpermute = [&](at::Tensor w, int64_t heads) {
    if (!permute_qk) return w;
    const int64_t D = c.head_dim;
    const auto rest = w.sizes().slice(1).vec();
    std::vector<int64_t> split = {heads, D / 2, 2};
    split.insert(split.end(), rest.begin(), rest.end());
    return w.reshape(split).transpose(1, 2).contiguous().reshape(w.sizes());
  };
  ModelWeights w;
  w.embed = get("token_embd.weight");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.input_norm = get(blk(l, "attn_norm.weight"));
    lw.q_proj = unpermute(get(blk(l, "attn_q.weight")), c.num_attention_heads);
    lw.k_proj = unpermute(get(blk(l, "attn_k.weight")), c.num_key_value_heads);
    lw.v_proj = get(blk(l, "attn_v.weight"));
    if (c.attention_bias) {
      lw.q_bias = unpermute(get(blk(l, "attn_q.bias")), c.num_attention_heads);
      lw.k_bias = unpermute(get(blk(l, "attn_k.bias")), c.num_key_value_heads);
      lw.v_bias = get(blk(l, "attn_v.bias"));
    }
    lw.o_proj = get(blk(l, "attn_output.weight"));
    lw.post_norm = get(blk(l, "ffn_norm.weight"));
    lw.gate_proj = get(blk(l, "ffn_gate.weight"));
    lw.up_proj = get(blk(l, "ffn_up.weight"));
    lw.down_proj = get(blk(l, "ffn_down.weight"));
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = get("output_norm.weight");
  w.lm_head = c.tie_word_embeddings ? w.embed : get("output.weight");
  if (!opt.device.is_cpu()) {
    const auto to = [&](at::Tensor& t) {
      if (t.defined()) t = t.to(opt.device);
    };
    to(w.embed), to(w.final_norm);
    for (auto& lw : w.layers)
      for (at::Tensor* t : {&lw.input_norm, &lw.q_proj, &lw.q_bias, &lw.k_proj, &lw.k_bias, &lw.v_proj, &lw.v_bias,
                            &lw.o_proj, &lw.post_norm, &lw.gate_proj, &lw.up_proj, &lw.down_proj})
        to(*t);
    w.lm_head = c.tie_word_embeddings ? w.embed : w.lm_head.to(opt.device);
  }
  return LlamaModel(c, std::move(w));
}

LlamaModel load_gguf_model(const std::string& path, const LoadOptions& opt) {
  const GgufFile f(path);
  return load_gguf_model(f, opt);
}

// ---------------------------------------------------------------------------------------------
// Conversion to an HF checkpoint folder

ModelConfig convert_gguf(const std::string& gguf_path, const std::string& out_dir, c10::ScalarType dtype) {
  namespace fs = std::filesystem;
  const GgufFile f(gguf_path);
  // Everything is read and checked before the folder is touched.
  LoadOptions opt;
  opt.dtype = dtype;
  LlamaModel model = load_gguf_model(f, opt);
  const std::unique_ptr<Tokenizer> tok = gguf_tokenizer(f);  // refuses what cannot be converted
  (void)gguf_tokenizer_config(f);                            // and a template that cannot be
  fs::create_directories(out_dir);
  model.save(out_dir, dtype);
  write_gguf_tokenizer_files(f, out_dir);
  const auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = (fs::path(out_dir) / name).string();
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out) fail("{}: write failed", path);
  };
  ModelConfig c = model.config();
  c.torch_dtype = dtype_name(dtype);
  json gen = {{"_from_model_config", true}};
  if (c.bos_token_id) gen["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) gen["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) gen["eos_token_id"] = c.eos_token_ids;
  write("generation_config.json", gen.dump(1) + "\n");
  return c;
}

}  // namespace kvlab
