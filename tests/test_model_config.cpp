// ModelConfig from config.json as HF publishes it for each supported family.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/model/model_config.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using json = nlohmann::json;

// Field values of the published Llama-3.1-8B config.json.
const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 128256})";

const char* kLlama2 = R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
  "num_attention_heads": 32, "num_hidden_layers": 32, "rms_norm_eps": 1e-05, "vocab_size": 32000,
  "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2, "rope_scaling": null})";

const char* kMistral = R"({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 32000, "max_position_embeddings": 32768})";

const char* kQwen2 = R"({"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
  "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": false,
  "tie_word_embeddings": false, "vocab_size": 152064, "max_position_embeddings": 32768})";

TEST(ModelConfig, Llama31WithLlama3RopeScaling) {
  ModelConfig c = ModelConfig::from_json(json::parse(kLlama31), "llama31");
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.kv_groups(), 4);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(c.attention_bias);
  // 8.03B parameters, as published.
  EXPECT_NEAR(c.parameter_count() / 1e9, 8.03, 0.01);
}

TEST(ModelConfig, Llama2DefaultsToMha) {
  ModelConfig c = ModelConfig::from_json(json::parse(kLlama2), "llama2");
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::None);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_NEAR(c.parameter_count() / 1e9, 6.74, 0.01);  // Llama-2-7B
}

TEST(ModelConfig, MistralSlidingWindowAndQwen2Bias) {
  ModelConfig m = ModelConfig::from_json(json::parse(kMistral), "mistral");
  ASSERT_TRUE(m.sliding_window.has_value());
  EXPECT_EQ(*m.sliding_window, 4096);
  ModelConfig q = ModelConfig::from_json(json::parse(kQwen2), "qwen2");
  EXPECT_TRUE(q.attention_bias);
  EXPECT_FALSE(q.sliding_window.has_value());  // use_sliding_window: false
  EXPECT_NEAR(q.parameter_count() / 1e9, 7.62, 0.01);  // Qwen2-7B
}

TEST(ModelConfig, JsonRoundTrip) {
  for (const char* src : {kLlama31, kLlama2, kMistral, kQwen2}) {
    ModelConfig a = ModelConfig::from_json(json::parse(src), "a");
    ModelConfig b = ModelConfig::from_json(a.to_json(), "b");
    EXPECT_EQ(a.to_json(), b.to_json());
  }
}

std::string error_of(const std::string& text) {
  test::TempDir dir;
  {
    std::ofstream out(dir / "config.json");
    out << text;
  }
  try {
    ModelConfig::from_file(dir / "config.json");
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line error: " << msg;
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
    return msg;
  }
  return "";
}

TEST(ModelConfig, ErrorsNameTheKey) {
  json j = json::parse(kLlama2);
  EXPECT_NE(error_of("{not json").find("invalid JSON"), std::string::npos);
  auto with = [&](const char* key, json value) {
    json k = j;
    k[key] = value;
    return error_of(k.dump());
  };
  EXPECT_NE(with("model_type", "gpt2").find("gpt2"), std::string::npos);
  EXPECT_NE(with("hidden_size", "big").find("hidden_size"), std::string::npos);
  EXPECT_NE(with("num_key_value_heads", 5).find("num_key_value_heads"), std::string::npos);
  EXPECT_NE(with("rope_scaling", json{{"rope_type", "yarn"}, {"factor", 4}}).find("yarn"), std::string::npos);
  json k = j;
  k.erase("vocab_size");
  EXPECT_NE(error_of(k.dump()).find("vocab_size"), std::string::npos);
  EXPECT_THROW(ModelConfig::from_file("/nonexistent/config.json"), Error);
}

TEST(ModelConfig, NamedShapes) {
  for (const auto& name : ModelConfig::shape_names()) EXPECT_NO_THROW(ModelConfig::named_shape(name)) << name;
  EXPECT_NEAR(ModelConfig::named_shape("llama2-7b").parameter_count() / 1e9, 6.74, 0.01);
  EXPECT_NEAR(ModelConfig::named_shape("small-100m").parameter_count() / 1e6, 100, 15);
  // The published sizes of the checkpoints these copy: 134.5M (SmolLM2-135M), 1.236B (Llama-3.2-1B).
  EXPECT_NEAR(ModelConfig::named_shape("smollm2-135m").parameter_count() / 1e6, 134.5, 0.1);
  EXPECT_NEAR(ModelConfig::named_shape("llama3.2-1b").parameter_count() / 1e9, 1.2358, 0.001);
  try {
    ModelConfig::named_shape("llama9");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tiny"), std::string::npos);  // lists valid names
  }
}

}  // namespace
}  // namespace kvlab
