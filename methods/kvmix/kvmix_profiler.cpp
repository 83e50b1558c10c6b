#include "kvmix_profiler.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include "kvlab/common/error.h"
#include "kvlab/common/progress.h"
#include "kvlab/model/llama_model.h"

namespace kvlab::kvmix {
namespace {

// Marks the k_proj / v_proj weights of `layers` as requiring gradients for its lifetime; restores
// them afterwards (also when the forward throws), so the model is left as it was found.
class GradientScope {
 public:
  GradientScope(LlamaModel& model, const std::vector<int64_t>& layers) : model_(model), layers_(layers) {
    for (int64_t l : layers_) {
      auto& w = model_.weights().layers[static_cast<size_t>(l)];
      w.k_proj.set_requires_grad(true);
      w.v_proj.set_requires_grad(true);
    }
  }
  ~GradientScope() {
    for (int64_t l : layers_) {
      auto& w = model_.weights().layers[static_cast<size_t>(l)];
      w.k_proj.set_requires_grad(false);
      w.v_proj.set_requires_grad(false);
    }
  }
  GradientScope(const GradientScope&) = delete;
  GradientScope& operator=(const GradientScope&) = delete;

 private:
  LlamaModel& model_;
  std::vector<int64_t> layers_;
};

double frobenius(const at::Tensor& g) { return g.to(at::kDouble).norm().item<double>(); }

}  // namespace

at::Tensor prompt_loss(LlamaModel& model, const at::Tensor& tokens, ProfileLoss loss, int64_t pad_id) {
  if (tokens.dim() != 2 || tokens.size(0) != 1) fail("kvmix profile: expected one prompt of shape [1, T]");
  const int64_t T = tokens.size(1);
  if (T < 2) fail("kvmix profile: a prompt needs at least 2 tokens, got {}", T);
  KvCache cache = model.make_full_precision_cache();
  at::Tensor logits = model.forward(tokens, cache);        // [1, T, V]
  const int64_t V = logits.size(2);
  at::Tensor predicted = logits.narrow(1, 0, T - 1).reshape({T - 1, V});
  at::Tensor ids = tokens.to(logits.device(), at::kLong).reshape({T});
  at::Tensor target;  // [T - 1]
  if (loss == ProfileLoss::NextToken) {
    target = ids.narrow(0, 1, T - 1);
  } else {
    if (pad_id < 0) fail("kvmix profile: the reference loss needs the pad (EOS) id; the tokenizer has none");
    target = at::cat({ids.narrow(0, 2, T - 2), at::full({1}, pad_id, ids.options())});
  }
  return at::cross_entropy_loss(predicted, target);
}

LayerNorms gradient_norms(LlamaModel& model, const at::Tensor& tokens, ProfileLoss loss, int64_t pad_id,
                          double* loss_out) {
  const int64_t L = model.config().num_hidden_layers;
  std::vector<int64_t> all(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) all[static_cast<size_t>(l)] = l;
  c10::AutoGradMode grad_on(true);
  GradientScope scope(model, all);
  at::Tensor value = prompt_loss(model, tokens, loss, pad_id);
  std::vector<at::Tensor> inputs;  // k_proj of every layer, then v_proj of every layer
  for (int64_t l = 0; l < L; ++l) inputs.push_back(model.weights().layers[static_cast<size_t>(l)].k_proj);
  for (int64_t l = 0; l < L; ++l) inputs.push_back(model.weights().layers[static_cast<size_t>(l)].v_proj);
  const auto grads = torch::autograd::grad({value}, inputs);
  LayerNorms out;
  for (int64_t l = 0; l < L; ++l) {
    out.k.push_back(frobenius(grads[static_cast<size_t>(l)]));
    out.v.push_back(frobenius(grads[static_cast<size_t>(L + l)]));
  }
  if (loss_out) *loss_out = value.item<double>();
  return out;
}

LayerNorms per_layer_gradient_norms(LlamaModel& model, const at::Tensor& tokens, ProfileLoss loss, int64_t pad_id) {
  const int64_t L = model.config().num_hidden_layers;
  c10::AutoGradMode grad_on(true);
  LayerNorms out;
  for (int64_t l = 0; l < L; ++l) {
    GradientScope scope(model, {l});
    at::Tensor value = prompt_loss(model, tokens, loss, pad_id);
    auto& w = model.weights().layers[static_cast<size_t>(l)];
    const auto grads = torch::autograd::grad({value}, {w.k_proj, w.v_proj});
    out.k.push_back(frobenius(grads[0]));
    out.v.push_back(frobenius(grads[1]));
  }
  return out;
}

Profile profile_importance(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                           const ProfileOptions& options) {
  if (prompts.empty()) fail("kvmix profile: no calibration prompts");
  const int64_t L = model.config().num_hidden_layers;
  Profile p;
  p.k_score.assign(static_cast<size_t>(L), 0.0);
  p.v_score.assign(static_cast<size_t>(L), 0.0);
  Progress progress("kvmix profile", static_cast<int64_t>(prompts.size()), "prompts", "tok", 0.0,
                    options.progress ? stderr : nullptr);
  double loss_sum = 0;
  for (const auto& prompt : prompts) {
    const at::Tensor tokens = at::tensor(prompt, at::kLong).unsqueeze(0);  // [1, T]
    double loss = 0;
    const LayerNorms n = gradient_norms(model, tokens, options.loss, options.pad_id, &loss);
    for (int64_t l = 0; l < L; ++l) {
      p.k_score[static_cast<size_t>(l)] += n.k[static_cast<size_t>(l)];
      p.v_score[static_cast<size_t>(l)] += n.v[static_cast<size_t>(l)];
    }
    loss_sum += loss;
    p.tokens += static_cast<int64_t>(prompt.size());
    ++p.prompts;
    progress.advance(1, fmt::format("loss {:.4f}", loss), static_cast<int64_t>(prompt.size()));
  }
  for (int64_t l = 0; l < L; ++l) {
    p.k_score[static_cast<size_t>(l)] /= static_cast<double>(p.prompts);
    p.v_score[static_cast<size_t>(l)] /= static_cast<double>(p.prompts);
  }
  p.mean_loss = loss_sum / static_cast<double>(p.prompts);
  p.seconds = progress.elapsed_s();
  progress.finish(fmt::format("mean loss {:.4f}", p.mean_loss));
  return p;
}

}  // namespace kvlab::kvmix
