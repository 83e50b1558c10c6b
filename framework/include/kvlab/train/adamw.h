#pragma once
// AdamW (Loshchilov & Hutter): Adam moments with bias correction and weight decay decoupled from
// the gradient (p -= lr * wd * p), applied only to the tensors marked for decay (matrices, not
// norms). Written on ATen so its state is plain tensors that a checkpoint can hold.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace kvlab {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class AdamW {
 public:
  // params: leaf tensors with requires_grad; decay[i] says whether params[i] gets weight decay.
  AdamW(std::vector<at::Tensor> params, std::vector<bool> decay, AdamWOptions options);
  void step(double lr);          // uses each param's .grad(); a param without a grad is skipped
  void zero_grad();
  int64_t steps() const { return step_; }
  // State for checkpoints: first and second moments (same shapes as params) and the step count.
  std::vector<at::Tensor>& exp_avg() { return m_; }
  std::vector<at::Tensor>& exp_avg_sq() { return v_; }
  void set_steps(int64_t s) { step_ = s; }

 private:
  std::vector<at::Tensor> params_, m_, v_;
  std::vector<bool> decay_;
  AdamWOptions opt_;
  int64_t step_ = 0;
};

// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm before.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

// Linear warm-up from 0 to peak over `warmup` steps, then cosine decay to min_lr at `total`.
double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double peak, double min_lr);

}  // namespace kvlab
