#pragma once
// Small helpers shared by the test files.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kvlab/common/error.h"
#include "kvlab/model/model_config.h"
#include "kvlab/tokenizer/tokenizer.h"

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

// n draws of N(0, scale^2) from a fixed seed (plain floats, for the kernels' raw-pointer APIs).
inline std::vector<float> normal_floats(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// The kvlab::Error message f throws (a test failure when it throws none); with one_line, also
// checks that the message is a single line.
inline std::string error_of(const std::function<void()>& f, bool one_line = false) {
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    if (one_line) {
      EXPECT_EQ(m.find('\n'), std::string::npos) << "multi-line error: " << m;
    }
    return m;
  }
  ADD_FAILURE() << "expected a kvlab::Error";
  return "";
}

// A tokenizer of bytes folded into small_config's 50-token vocabulary, for model tests on text.
class FoldTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    std::vector<int32_t> ids;
    for (unsigned char ch : text) ids.push_back(2 + ch % 48);
    return ids;
  }
  std::string decode(const std::vector<int32_t>&, bool) const override { return ""; }
  int32_t vocab_size() const override { return 50; }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  std::string kind() const override { return "fold"; }
};

}  // namespace kvlab::test
