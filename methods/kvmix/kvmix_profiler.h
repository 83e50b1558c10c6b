#pragma once
// KVmix's profiler (METHODS.md section 4): the importance of layer l for keys is the Frobenius norm
// of dLoss/dW_k^l, the gradient of the calibration loss with respect to that layer's k_proj weight;
// for values the same with v_proj. Scores are averaged over calibration prompts.
//
// One forward and one backward pass per prompt give every layer's gradients at once
// (gradient_norms). The reference code re-runs the forward and backward once per layer;
// per_layer_gradient_norms keeps that procedure as the definition the fast path is tested against.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kvlab {
class LlamaModel;
}

namespace kvlab::kvmix {

enum class ProfileLoss {
  NextToken,  // mean cross-entropy of token t+1 given tokens 0..t (the plain causal-LM loss)
  Reference,  // the reference code's: labels shifted before HF shifts them again, so position t
              // predicts token t+2 and the last predicted position the pad (= EOS) id
};

// Per-layer gradient norms, [layers] each.
struct LayerNorms {
  std::vector<double> k, v;
};

// Loss of one prompt under `loss`. tokens: [1, T] int64, T >= 2. pad_id: the EOS id (Reference only).
at::Tensor prompt_loss(LlamaModel& model, const at::Tensor& tokens, ProfileLoss loss, int64_t pad_id = -1);

// ||dL/dW_k^l||_F and ||dL/dW_v^l||_F of every layer l from one backward pass.
LayerNorms gradient_norms(LlamaModel& model, const at::Tensor& tokens, ProfileLoss loss, int64_t pad_id = -1,
                          double* loss_out = nullptr);
// The same by the reference's procedure: one forward and backward per layer, with only that layer's
// k_proj and v_proj requiring gradients.
LayerNorms per_layer_gradient_norms(LlamaModel& model, const at::Tensor& tokens, ProfileLoss loss,
                                    int64_t pad_id = -1);

struct ProfileOptions {
  ProfileLoss loss = ProfileLoss::NextToken;
  int64_t pad_id = -1;        // EOS id, for ProfileLoss::Reference
  bool progress = true;       // progress line on stderr, one update per prompt
};

struct Profile {
  std::vector<double> k_score, v_score;  // [layers]: mean over prompts of the gradient norms
  int64_t prompts = 0;
  int64_t tokens = 0;                    // tokens fed, all prompts
  double mean_loss = 0;                  // mean over prompts of the calibration loss
  double seconds = 0;
};

// Scores from `prompts` (token ids; each at least 2 tokens).
Profile profile_importance(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                           const ProfileOptions& options);

}  // namespace kvlab::kvmix
