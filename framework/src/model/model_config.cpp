#include "kvlab/model/model_config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvlab/common/checked.h"
#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"

namespace kvlab {
namespace {

using json = nlohmann::json;

// Typed getters that name the file and key on a type mismatch.
int64_t get_int(const json& j, const char* key, const std::string& src, std::optional<int64_t> dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (dflt) return *dflt;
    fail("{}: missing required key '{}'", src, key);
  }
  if (!it->is_number_integer()) fail("{}: key '{}' must be an integer, got {}", src, key, it->dump());
  return it->get<int64_t>();
}

double get_double(const json& j, const char* key, const std::string& src, double dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number()) fail("{}: key '{}' must be a number, got {}", src, key, it->dump());
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, const std::string& src, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) fail("{}: key '{}' must be true or false, got {}", src, key, it->dump());
  return it->get<bool>();
}

// "rope_scaling" (transformers 4.x) or "rope_parameters" (5.x, which also holds rope_theta).
RopeScaling parse_rope_scaling(const json& j, const std::string& src) {
  RopeScaling rs;
  const char* key = j.contains("rope_parameters") ? "rope_parameters" : "rope_scaling";
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return rs;
  if (!it->is_object()) fail("{}: '{}' must be an object or null", src, key);
  const json& r = *it;
  std::string type;
  if (r.contains("rope_type")) type = r["rope_type"].get<std::string>();
  else if (r.contains("type")) type = r["type"].get<std::string>();
  const std::string where = src + " " + key;
  if (type == "default" || type.empty()) return rs;
  if (type == "linear") {
    rs.type = RopeScaling::Type::Linear;
  } else if (type == "llama3") {
    rs.type = RopeScaling::Type::Llama3;
    rs.low_freq_factor = get_double(r, "low_freq_factor", where, 1.0);
    rs.high_freq_factor = get_double(r, "high_freq_factor", where, 4.0);
    rs.original_max_position_embeddings = get_int(r, "original_max_position_embeddings", where, 8192);
    if (rs.high_freq_factor <= rs.low_freq_factor)
      fail("{}: high_freq_factor ({}) must exceed low_freq_factor ({})", where, rs.high_freq_factor,
           rs.low_freq_factor);
  } else {
    fail("{}: {} type '{}' is not supported (supported: default, linear, llama3)", src, key, type);
  }
  rs.factor = get_double(r, "factor", where, 1.0);
  if (rs.factor <= 0) fail("{}: factor must be positive, got {}", where, rs.factor);
  return rs;
}

}  // namespace

int64_t ModelConfig::q_dim() const {
  return product_or_fail({num_attention_heads, head_dim}, "q_dim = num_attention_heads x head_dim");
}

int64_t ModelConfig::kv_dim() const {
  return product_or_fail({num_key_value_heads, head_dim}, "kv_dim = num_key_value_heads x head_dim");
}

int64_t ModelConfig::parameter_count() const {
  const std::string what = "parameter count";
  const int64_t q = q_dim(), kv = kv_dim(), H = hidden_size;
  int64_t attn = product_or_fail({2, H, q}, what);                          // q_proj + o_proj
  attn = sum_or_fail(attn, product_or_fail({2, H, kv}, what), what);          // k_proj + v_proj
  if (attention_bias) attn = sum_or_fail(attn, sum_or_fail(q, product_or_fail({2, kv}, what), what), what);
  const int64_t mlp = product_or_fail({3, H, intermediate_size}, what);
  const int64_t per_layer = sum_or_fail(sum_or_fail(attn, mlp, what), product_or_fail({2, H}, what), what);
  const int64_t embed = product_or_fail({vocab_size, H, tie_word_embeddings ? 1 : 2}, what);
  return sum_or_fail(sum_or_fail(product_or_fail({num_hidden_layers, per_layer}, what), embed, what), H, what);
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: config must be a JSON object", src);
  ModelConfig c;
  if (!j.contains("model_type") || !j["model_type"].is_string())
    fail("{}: missing string key 'model_type' (expected llama, mistral or qwen2)", src);
  c.model_type = j["model_type"].get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2")
    fail("{}: model_type '{}' is not supported (supported: llama, mistral, qwen2)", src, c.model_type);
  c.vocab_size = get_int(j, "vocab_size", src, std::nullopt);
  c.hidden_size = get_int(j, "hidden_size", src, std::nullopt);
  c.intermediate_size = get_int(j, "intermediate_size", src, std::nullopt);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", src, std::nullopt);
  c.num_attention_heads = get_int(j, "num_attention_heads", src, std::nullopt);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", src, c.num_attention_heads);
  c.head_dim = get_int(j, "head_dim", src,
                       c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", src, 2048);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", src, 1e-6);
  c.rope_theta = get_double(j, "rope_theta", src, 10000.0);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    c.rope_theta = get_double(j["rope_parameters"], "rope_theta", src + " rope_parameters", c.rope_theta);
  c.rope_scaling = parse_rope_scaling(j, src);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", src, false);
  // Qwen2 always has q/k/v biases (its config has no key for it); llama/mistral use attention_bias.
  c.attention_bias = c.model_type == "qwen2" ? true : get_bool(j, "attention_bias", src, false);
  if (j.contains("sliding_window") && !j["sliding_window"].is_null()) {
    const bool enabled = c.model_type != "qwen2" || get_bool(j, "use_sliding_window", src, false);
    if (enabled) c.sliding_window = get_int(j, "sliding_window", src, std::nullopt);
  }
  if (j.contains("bos_token_id") && !j["bos_token_id"].is_null())
    c.bos_token_id = get_int(j, "bos_token_id", src, std::nullopt);
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const json& e = j["eos_token_id"];
    if (e.is_array()) {
      for (const auto& x : e) {
        if (!x.is_number_integer()) fail("{}: 'eos_token_id' entries must be integers", src);
        c.eos_token_ids.push_back(x.get<int64_t>());
      }
    } else {
      c.eos_token_ids.push_back(get_int(j, "eos_token_id", src, std::nullopt));
    }
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"];
  c.validate(src);
  return c;
}

void ModelConfig::validate(const std::string& src) const {
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) fail("{}: '{}' must be positive, got {}", src, key, v);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("head_dim", head_dim);
  positive("max_position_embeddings", max_position_embeddings);
  // Before anything multiplies them: caps that name the value and the limit.
  auto at_most = [&](const char* key, int64_t v, int64_t limit) {
    require_at_most(v, limit, fmt::format("{}: '{}'", src, key));
  };
  at_most("vocab_size", vocab_size, kMaxVocabSize);
  at_most("hidden_size", hidden_size, kMaxHiddenSize);
  at_most("intermediate_size", intermediate_size, kMaxIntermediateSize);
  at_most("num_hidden_layers", num_hidden_layers, kMaxLayers);
  at_most("num_attention_heads", num_attention_heads, kMaxHeads);
  at_most("num_key_value_heads", num_key_value_heads, kMaxHeads);
  at_most("head_dim", head_dim, kMaxHeadDim);
  if (sliding_window && *sliding_window <= 0)
    fail("{}: 'sliding_window' must be positive, got {}", src, *sliding_window);
  if (rope_scaling.type == RopeScaling::Type::Llama3) {
    if (!(rope_scaling.low_freq_factor > 0))
      fail("{}: rope_scaling low_freq_factor must be positive, got {}", src, rope_scaling.low_freq_factor);
    if (rope_scaling.original_max_position_embeddings <= 0)
      fail("{}: rope_scaling original_max_position_embeddings must be positive, got {}", src,
           rope_scaling.original_max_position_embeddings);
  }
  if (num_attention_heads % num_key_value_heads != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", src,
         num_attention_heads, num_key_value_heads);
  if (head_dim % 2 != 0) fail("{}: head_dim ({}) must be even for RoPE", src, head_dim);
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps))
    fail("{}: 'rms_norm_eps' must be a positive finite number, got {}", src, rms_norm_eps);
  if (!(rope_theta > 0) || !std::isfinite(rope_theta))
    fail("{}: 'rope_theta' must be a positive finite number, got {}", src, rope_theta);
  try {
    parameter_count();  // every product the runtime forms fits in 64 bits
  } catch (const Error& e) {
    fail("{}: {}", src, e.what());
  }
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  check_input_file(path, "model config", kMaxJsonFileBytes);
  std::ifstream in(path);
  if (!in) fail("{}: cannot open model config (is this a checkpoint directory?)", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  try {
    return from_json(j, path);
  } catch (const json::exception& e) {  // e.g. a rope_scaling type that is not a string
    fail("{}: {}", path, e.what());
  }
}

json ModelConfig::to_json() const {
  json j;
  static const char* arch[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  j["architectures"] = {model_type == "llama" ? arch[0] : model_type == "mistral" ? arch[1] : arch[2]};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  switch (rope_scaling.type) {
    case RopeScaling::Type::None: j["rope_scaling"] = nullptr; break;
    case RopeScaling::Type::Linear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope_scaling.factor}};
      break;
    case RopeScaling::Type::Llama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", rope_scaling.factor},
                           {"low_freq_factor", rope_scaling.low_freq_factor},
                           {"high_freq_factor", rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings",
                            rope_scaling.original_max_position_embeddings}};
      break;
  }
  if (sliding_window) {
    j["sliding_window"] = *sliding_window;
    if (model_type == "qwen2") j["use_sliding_window"] = true;
  } else if (model_type == "mistral") {
    j["sliding_window"] = nullptr;
  }
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  return j;
}

std::vector<std::string> ModelConfig::shape_names() {
  return {"tiny",      "tiny-gqa",   "small-100m", "smollm2-135m", "llama3.2-1b",
          "llama2-7b", "mistral-7b", "llama3-8b",  "qwen2-7b"};
}

ModelConfig ModelConfig::named_shape(const std::string& name) {
  ModelConfig c;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  if (name == "tiny" || name == "tiny-gqa") {  // a few hundred K parameters: tests and quickstart
    c.vocab_size = 512, c.hidden_size = 64, c.intermediate_size = 176, c.num_hidden_layers = 4;
    c.num_attention_heads = 4, c.num_key_value_heads = name == "tiny" ? 4 : 2, c.head_dim = 16;
    c.max_position_embeddings = 2048, c.rms_norm_eps = 1e-5;
  } else if (name == "small-100m") {  // ~100M parameters: the CPU benchmark shape
    c.vocab_size = 32000, c.hidden_size = 768, c.intermediate_size = 2048, c.num_hidden_layers = 12;
    c.num_attention_heads = 12, c.num_key_value_heads = 4, c.head_dim = 64;
    c.max_position_embeddings = 4096, c.rms_norm_eps = 1e-5, c.tie_word_embeddings = true;
  } else if (name == "smollm2-135m") {  // HuggingFaceTB/SmolLM2-135M(-Instruct): 134.5M parameters
    c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536, c.num_hidden_layers = 30;
    c.num_attention_heads = 9, c.num_key_value_heads = 3, c.head_dim = 64;
    c.max_position_embeddings = 8192, c.rms_norm_eps = 1e-5, c.rope_theta = 100000.0, c.tie_word_embeddings = true;
  } else if (name == "llama3.2-1b") {  // meta-llama/Llama-3.2-1B: 1.24B parameters
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_hidden_layers = 16;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 64;
    c.max_position_embeddings = 131072, c.rms_norm_eps = 1e-5, c.rope_theta = 500000.0, c.tie_word_embeddings = true;
    c.rope_scaling.type = RopeScaling::Type::Llama3;
    c.rope_scaling.factor = 32.0;
    c.rope_scaling.low_freq_factor = 1.0, c.rope_scaling.high_freq_factor = 4.0;
    c.rope_scaling.original_max_position_embeddings = 8192;
    c.bos_token_id = 128000, c.eos_token_ids = {128001};
  } else if (name == "llama2-7b") {
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 32, c.head_dim = 128;
    c.max_position_embeddings = 4096, c.rms_norm_eps = 1e-5;
  } else if (name == "mistral-7b") {
    c.model_type = "mistral";
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 14336, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 128;
    c.max_position_embeddings = 32768, c.rms_norm_eps = 1e-5, c.rope_theta = 1e6;
  } else if (name == "llama3-8b") {
    c.vocab_size = 128256, c.hidden_size = 4096, c.intermediate_size = 14336, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 128;
    c.max_position_embeddings = 131072, c.rms_norm_eps = 1e-5, c.rope_theta = 500000.0;
    c.rope_scaling.type = RopeScaling::Type::Llama3;
    c.rope_scaling.factor = 8.0;
    c.bos_token_id = 128000, c.eos_token_ids = {128001};
  } else if (name == "qwen2-7b") {
    c.model_type = "qwen2";
    c.vocab_size = 152064, c.hidden_size = 3584, c.intermediate_size = 18944, c.num_hidden_layers = 28;
    c.num_attention_heads = 28, c.num_key_value_heads = 4, c.head_dim = 128;
    c.max_position_embeddings = 32768, c.rms_norm_eps = 1e-6, c.rope_theta = 1e6;
    c.attention_bias = true;
    c.bos_token_id = 151643, c.eos_token_ids = {151643};
  } else {
    std::string names;
    for (const auto& n : shape_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown model shape '{}' (valid: {})", name, names);
  }
  c.validate("shape " + name);
  return c;
}

}  // namespace kvlab
