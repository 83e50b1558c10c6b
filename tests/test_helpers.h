#pragma once
// Small helpers shared by the test files.
#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "kvlab/model/model_config.h"

namespace kvlab::test {

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("kvlab_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::string shared_dir() { return KVLAB_SHARED_DIR; }
inline bool have_shared() { return std::filesystem::exists(shared_dir() + "/README.md"); }

// A small Llama config for tests: 2 layers, hidden 32, 4 query heads of 8 dims.
inline ModelConfig small_config(int64_t kv_heads = 4, const std::string& type = "llama") {
  ModelConfig c;
  c.model_type = type;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = kv_heads;
  c.head_dim = 8;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.attention_bias = type == "qwen2";
  return c;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace kvlab::test
