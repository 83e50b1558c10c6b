#include "kvlab/model/llama_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/model/gguf_model.h"
#include "kvlab/model/linear.h"
#include "kvlab/model/safetensors.h"

namespace kvlab {
namespace {

std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }

// 1 + the highest n of the "model.layers.<n>." tensors in the checkpoint (0 when there are none).
int64_t layers_in_weights(const SafetensorsCheckpoint& ckpt) {
  const std::string prefix = "model.layers.";
  int64_t layers = 0;
  for (const auto& name : ckpt.names()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const size_t dot = name.find('.', prefix.size());
    const std::string digits = name.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    layers = std::max<int64_t>(layers, std::stoll(digits) + 1);
  }
  return layers;
}

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// RMSNorm as transformers computes it: normalise in fp32, cast back, then scale.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight.to(x.scalar_type()) * h.to(x.scalar_type());
}

// x @ w^T + b in the activations' dtype; 16-bit weights under fp32 activations (CPU) are read in
// place by the 16-bit kernels (kvlab/model/linear.h).
at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) { return kvlab::linear(x, w, b); }

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    out.push_back({p + "input_layernorm.weight", {H}});
    out.push_back({p + "self_attn.q_proj.weight", {c.q_dim(), H}});
    out.push_back({p + "self_attn.k_proj.weight", {c.kv_dim(), H}});
    out.push_back({p + "self_attn.v_proj.weight", {c.kv_dim(), H}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {c.q_dim()}});
      out.push_back({p + "self_attn.k_proj.bias", {c.kv_dim()}});
      out.push_back({p + "self_attn.v_proj.bias", {c.kv_dim()}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {H, c.q_dim()}});
    out.push_back({p + "post_attention_layernorm.weight", {H}});
    out.push_back({p + "mlp.gate_proj.weight", {I, H}});
    out.push_back({p + "mlp.up_proj.weight", {I, H}});
    out.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  out.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}});
  return out;
}

LlamaModel::LlamaModel(ModelConfig config, ModelWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)), rope_(config_) {
  if (static_cast<int64_t>(weights_.layers.size()) != config_.num_hidden_layers)
    fail("model: {} layers of weights for a config of {} layers", weights_.layers.size(),
         config_.num_hidden_layers);
}

// Loads every tensor by name into the struct, in the requested dtype and device.
static ModelWeights assemble(const ModelConfig& c, const std::function<at::Tensor(const std::string&)>& get) {
  ModelWeights w;
  w.embed = get("model.embed_tokens.weight");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    LayerWeights lw;
    lw.input_norm = get(p + "input_layernorm.weight");
    lw.q_proj = get(p + "self_attn.q_proj.weight");
    lw.k_proj = get(p + "self_attn.k_proj.weight");
    lw.v_proj = get(p + "self_attn.v_proj.weight");
    if (c.attention_bias) {
      lw.q_bias = get(p + "self_attn.q_proj.bias");
      lw.k_bias = get(p + "self_attn.k_proj.bias");
      lw.v_bias = get(p + "self_attn.v_proj.bias");
    }
    lw.o_proj = get(p + "self_attn.o_proj.weight");
    lw.post_norm = get(p + "post_attention_layernorm.weight");
    lw.gate_proj = get(p + "mlp.gate_proj.weight");
    lw.up_proj = get(p + "mlp.up_proj.weight");
    lw.down_proj = get(p + "mlp.down_proj.weight");
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = get("model.norm.weight");
  w.lm_head = c.tie_word_embeddings ? w.embed : get("lm_head.weight");
  return w;
}

LlamaModel LlamaModel::load(const std::string& dir, const LoadOptions& opt) {
  if (is_gguf_path(dir)) return load_gguf_model(dir, opt);
  ModelConfig config = ModelConfig::from_dir(dir);
  SafetensorsCheckpoint ckpt(dir);
  // The layer count against the weights first: a config stating more layers than the file holds
  // is refused before anything is built per layer.
  const int64_t stored_layers = layers_in_weights(ckpt);
  if (config.num_hidden_layers > stored_layers)
    fail("{}: config.json has num_hidden_layers {} but the weights hold {} layers", dir, config.num_hidden_layers,
         stored_layers);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& [name, shape] : expected_tensors(config)) {
    if (!ckpt.contains(name)) fail("{}: checkpoint has no tensor '{}' (required by config.json)", dir, name);
    const auto& have = ckpt.entry(name).shape;
    if (have != shape)
      fail("{}: tensor '{}' has shape {} but config.json implies {}", dir, name, shape_str(have),
           shape_str(shape));
    shapes[name] = shape;
  }
  auto get = [&](const std::string& name) {
    at::Tensor t = ckpt.tensor(name);
    // A copy detaches the weights from the read-only mapping and puts them where they will run;
    // the mapped pages are then dropped, so loading never holds the weights twice.
    at::Tensor out = t.to(opt.device, opt.dtype, /*non_blocking=*/false, /*copy=*/true);
    ckpt.release(name);
    return out;
  };
  return LlamaModel(config, assemble(config, get));
}

LlamaModel LlamaModel::random(const ModelConfig& config, uint64_t seed, const LoadOptions& opt, double init_std) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto expected = expected_tensors(config);
  const std::map<std::string, std::vector<int64_t>> shapes(expected.begin(), expected.end());
  auto get = [&](const std::string& name) {
    const auto& shape = shapes.at(name);
    at::Tensor t;
    if (name.find("norm") != std::string::npos) t = at::ones(shape, at::kFloat);
    else t = at::normal(0.0, init_std, shape, gen, at::TensorOptions().dtype(at::kFloat));
    return t.to(opt.device, opt.dtype);
  };
  return LlamaModel(config, assemble(config, get));
}

void LlamaModel::save(const std::string& dir, c10::ScalarType dtype) const {
  std::filesystem::create_directories(dir);
  ModelConfig c = config_;
  c.torch_dtype = dtype == at::kFloat ? "float32" : dtype == at::kBFloat16 ? "bfloat16" : "float16";
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  auto add = [&](const std::string& name, const at::Tensor& t) { tensors.push_back({name, t.to(dtype)}); };
  add("model.embed_tokens.weight", weights_.embed);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    const LayerWeights& lw = weights_.layers[static_cast<size_t>(l)];
    add(p + "input_layernorm.weight", lw.input_norm);
    add(p + "self_attn.q_proj.weight", lw.q_proj);
    add(p + "self_attn.k_proj.weight", lw.k_proj);
    add(p + "self_attn.v_proj.weight", lw.v_proj);
    if (c.attention_bias) {
      add(p + "self_attn.q_proj.bias", lw.q_bias);
      add(p + "self_attn.k_proj.bias", lw.k_bias);
      add(p + "self_attn.v_proj.bias", lw.v_bias);
    }
    add(p + "self_attn.o_proj.weight", lw.o_proj);
    add(p + "post_attention_layernorm.weight", lw.post_norm);
    add(p + "mlp.gate_proj.weight", lw.gate_proj);
    add(p + "mlp.up_proj.weight", lw.up_proj);
    add(p + "mlp.down_proj.weight", lw.down_proj);
  }
  add("model.norm.weight", weights_.final_norm);
  if (!c.tie_word_embeddings) add("lm_head.weight", weights_.lm_head);
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  std::ofstream out(dir + "/config.json");
  out << c.to_json().dump(2) << "\n";
  if (!out) fail("{}/config.json: write failed", dir);
}

int64_t LlamaModel::weight_bytes() const {
  const ModelWeights& w = weights_;
  int64_t total = static_cast<int64_t>(w.embed.nbytes() + w.final_norm.nbytes());
  if (!w.lm_head.is_same(w.embed)) total += static_cast<int64_t>(w.lm_head.nbytes());
  for (const auto& l : w.layers)
    for (const at::Tensor* t : {&l.input_norm, &l.q_proj, &l.q_bias, &l.k_proj, &l.k_bias, &l.v_proj, &l.v_bias,
                                &l.o_proj, &l.post_norm, &l.gate_proj, &l.up_proj, &l.down_proj})
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
  return total;
}

c10::ScalarType LlamaModel::activation_dtype() const {
  const bool half = dtype() == at::kHalf || dtype() == at::kBFloat16;
  return (device().is_cpu() && half) ? at::kFloat : dtype();
}

at::Tensor LlamaModel::layer_forward(int64_t l, const at::Tensor& x, const at::Tensor& positions,
                                     LayerCache& cache) {
  const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
  const ModelConfig& c = config_;
  const int64_t B = x.size(0), T = x.size(1), D = c.head_dim;

  at::Tensor h = rms_norm(x, w.input_norm, c.rms_norm_eps);
  // Projections to [B, heads, T, D]; keys/values stay at kv-head count (no GQA expansion).
  at::Tensor q = project(h, w.q_proj, w.q_bias).view({B, T, c.num_attention_heads, D}).transpose(1, 2);
  at::Tensor k = project(h, w.k_proj, w.k_bias).view({B, T, c.num_key_value_heads, D}).transpose(1, 2);
  at::Tensor v = project(h, w.v_proj, w.v_bias).view({B, T, c.num_key_value_heads, D}).transpose(1, 2);
  q = rope_.apply(q, positions);
  k = rope_.apply(k, positions);
  // K/V reach the cache in the model's dtype (16-bit for a 16-bit model even when activations
  // run in fp32 on the CPU), so what the cache stores and counts is what a 16-bit runtime keeps.
  if (k.scalar_type() != dtype()) k = k.to(dtype()), v = v.to(dtype());
  at::Tensor attn = cache.attend(q, k, v.contiguous());                // [B, Hq, T, D]
  attn = attn.transpose(1, 2).reshape({B, T, c.q_dim()});
  at::Tensor out = x + project(attn, w.o_proj);

  h = rms_norm(out, w.post_norm, c.rms_norm_eps);
  at::Tensor mlp = project(at::silu(project(h, w.gate_proj)) * project(h, w.up_proj), w.down_proj);
  return out + mlp;
}

at::Tensor LlamaModel::forward(const at::Tensor& tokens, KvCache& cache,
                               const std::optional<at::Tensor>& positions, bool last_only) {
  at::Tensor x = forward_hidden(tokens, cache, positions);
  return head(last_only ? x.narrow(1, x.size(1) - 1, 1) : x);
}

at::Tensor LlamaModel::head(const at::Tensor& hidden) const {
  at::Tensor logits = project(hidden, weights_.lm_head);
  return logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat);
}

at::Tensor LlamaModel::forward_hidden(const at::Tensor& tokens, KvCache& cache,
                                      const std::optional<at::Tensor>& positions) {
  if (tokens.dim() != 2) fail("model.forward: tokens must be [batch, tokens], got {}", shape_str(tokens.sizes()));
  if (cache.num_layers() != config_.num_hidden_layers)
    fail("model.forward: cache has {} layers, model {}", cache.num_layers(), config_.num_hidden_layers);
  const int64_t B = tokens.size(0), T = tokens.size(1);
  at::Tensor ids = tokens.to(device(), at::kLong);
  if (T == 0) fail("model.forward: no tokens");
  const int64_t vmax = ids.max().item<int64_t>(), vmin = ids.min().item<int64_t>();
  if (vmin < 0 || vmax >= config_.vocab_size)
    fail("model.forward: token id {} outside the vocabulary [0, {})", vmin < 0 ? vmin : vmax,
         config_.vocab_size);

  at::Tensor pos;
  if (positions) {
    pos = positions->to(device(), at::kLong);
    if (pos.sizes() != tokens.sizes())
      fail("model.forward: positions {} must match tokens {}", shape_str(pos.sizes()), shape_str(tokens.sizes()));
  } else {
    pos = (at::arange(T, ids.options()) + cache.length()).unsqueeze(0).expand({B, T});
  }

  at::Tensor x = at::embedding(weights_.embed, ids).to(activation_dtype());  // [B, T, H]
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) x = layer_forward(l, x, pos, cache.layer(l));
  // The final norm is per position, so the rows a caller keeps come out as in a whole forward.
  return rms_norm(x, weights_.final_norm, config_.rms_norm_eps);
}

}  // namespace kvlab
