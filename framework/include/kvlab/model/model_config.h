#pragma once
// Architecture of a Llama-family checkpoint, read from HF config.json (model_type llama, mistral,
// qwen2). Every field that the runtime uses is here; unknown fields are ignored (HF configs carry
// many), but a known field of the wrong type or an impossible value is an error naming the key.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace kvlab {

// RoPE frequency scaling (config.json "rope_scaling").
struct RopeScaling {
  enum class Type { None, Linear, Llama3 };
  Type type = Type::None;
  double factor = 1.0;
  // llama3 only:
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type = "llama";   // llama | mistral | qwen2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;    // GQA when < num_attention_heads
  int64_t head_dim = 0;               // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;        // q/k/v projections carry a bias (qwen2: always)
  std::optional<int64_t> sliding_window;  // noted (mistral/qwen2), not applied: see README
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype = "float32";

  // Hard caps on what a config may state, far above any real model (the largest have ~130 layers,
  // 128 heads, a 262k vocabulary); checked before anything is allocated or iterated.
  static constexpr int64_t kMaxLayers = 4096;
  static constexpr int64_t kMaxHeads = 4096;
  static constexpr int64_t kMaxHeadDim = 65536;
  static constexpr int64_t kMaxHiddenSize = int64_t{1} << 20;
  static constexpr int64_t kMaxIntermediateSize = int64_t{1} << 22;
  static constexpr int64_t kMaxVocabSize = int64_t{1} << 24;

  int64_t kv_groups() const { return num_attention_heads / num_key_value_heads; }
  // Checked products: a config that was never validated fails here instead of overflowing.
  int64_t q_dim() const;
  int64_t kv_dim() const;
  int64_t parameter_count() const;

  // Parses and validates; `source` names the file in error messages.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_file(const std::string& path);
  static ModelConfig from_dir(const std::string& dir) { return from_file(dir + "/config.json"); }
  nlohmann::json to_json() const;  // HF-compatible config.json content
  void validate(const std::string& source) const;

  // Named shapes for `kvlab make-model` and random-weight runs: tiny, small-100m, smollm2-135m,
  // llama3.2-1b, llama2-7b, mistral-7b, llama3-8b, qwen2-7b. Throws listing the valid names.
  static ModelConfig named_shape(const std::string& name);
  static std::vector<std::string> shape_names();
};

}  // namespace kvlab
