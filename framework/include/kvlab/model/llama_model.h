#pragma once
// The Llama-family decoder (llama, mistral, qwen2) in LibTorch: token embedding, per layer
// RMSNorm -> GQA attention with RoPE (through the KvCache seam) -> residual -> RMSNorm -> SwiGLU MLP
// -> residual, final RMSNorm and LM head. Device-generic (CPU, CUDA) and dtype-generic (fp32, bf16,
// fp16); autograd works through it, so gradients w.r.t. any weight (e.g. k_proj) can be taken.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/model/model_config.h"
#include "kvlab/model/rope.h"

namespace kvlab {

// Weights in HF's layout: a Linear weight is [out_features, in_features].
struct LayerWeights {
  at::Tensor input_norm;      // [H]
  at::Tensor q_proj, q_bias;  // [Hq*D, H], [Hq*D] (bias only with attention_bias)
  at::Tensor k_proj, k_bias;  // [Hkv*D, H], [Hkv*D]
  at::Tensor v_proj, v_bias;  // [Hkv*D, H], [Hkv*D]
  at::Tensor o_proj;          // [H, Hq*D]
  at::Tensor post_norm;       // [H]
  at::Tensor gate_proj;       // [I, H]
  at::Tensor up_proj;         // [I, H]
  at::Tensor down_proj;       // [H, I]
};

struct ModelWeights {
  at::Tensor embed;            // [V, H]
  std::vector<LayerWeights> layers;
  at::Tensor final_norm;       // [H]
  at::Tensor lm_head;          // [V, H]; the same tensor as embed when tie_word_embeddings
};

struct LoadOptions {
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;
};

// Every (HF tensor name, expected shape) a checkpoint of this config must hold.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const ModelConfig& c);

class LlamaModel {
 public:
  LlamaModel(ModelConfig config, ModelWeights weights);

  // Loads config.json + safetensors from `dir`, validating names and shapes against the config;
  // `dir` may also be a GGUF file (see gguf_model.h).
  static LlamaModel load(const std::string& dir, const LoadOptions& options = {});
  // Random weights (normal with std init_std; norms 1) for a config; deterministic in `seed`.
  static LlamaModel random(const ModelConfig& config, uint64_t seed, const LoadOptions& options = {},
                           double init_std = 0.02);
  // Writes config.json and model.safetensors (weights in `dtype`) into dir (created if needed).
  void save(const std::string& dir, c10::ScalarType dtype) const;

  // tokens: [B, T] int64. positions: [B, T] int64, default cache.length() + t.
  // Returns logits [B, T, V] in fp32 (or [B, 1, V] for the last position when last_only).
  at::Tensor forward(const at::Tensor& tokens, KvCache& cache,
                     const std::optional<at::Tensor>& positions = std::nullopt, bool last_only = false);
  // forward() in two halves: the final hidden states [B, T, hidden] (after the last norm, in the
  // activation dtype) and the LM head on any rows of them (logits [..., V] in fp32). A long window's
  // logits are [T, V] (2048 x 49152 fp32 is 400 MB): perplexity takes them a block of rows at a time.
  at::Tensor forward_hidden(const at::Tensor& tokens, KvCache& cache,
                            const std::optional<at::Tensor>& positions = std::nullopt);
  at::Tensor head(const at::Tensor& hidden) const;

  KvCache make_full_precision_cache() const { return KvCache::full_precision(config_.num_hidden_layers); }

  const ModelConfig& config() const { return config_; }
  ModelWeights& weights() { return weights_; }
  const ModelWeights& weights() const { return weights_; }
  c10::Device device() const { return weights_.embed.device(); }
  c10::ScalarType dtype() const { return weights_.embed.scalar_type(); }
  int64_t weight_bytes() const;  // bytes of every weight tensor held (a tied LM head counted once)
  // Activations' dtype: the weights' dtype, except fp16 and bf16 on the CPU (LibTorch has no fast
  // 16-bit matmul there), where activations run in fp32 and the 16-bit weights are read by the
  // matmuls directly (see project() in llama_model.cpp). K/V still reach the cache in dtype().
  c10::ScalarType activation_dtype() const;

 private:
  at::Tensor layer_forward(int64_t l, const at::Tensor& x, const at::Tensor& positions, LayerCache& cache);
  ModelConfig config_;
  ModelWeights weights_;
  Rope rope_;
};

}  // namespace kvlab
