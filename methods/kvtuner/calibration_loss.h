#pragma once
// The loss a KVTuner plan is judged by on calibration text: how far the model under the plan's
// cache drifts from the full-precision model, either
//   kl   mean KL(P_fp || P_plan) of the next-token distributions over all predicted tokens, or
//   ppl  the increase of the mean next-token NLL (log-perplexity) over the full-precision model.
// Windows run through the streaming cache with token-by-token semantics, exactly as
// evaluate_quantized_perplexity runs them, batched (windows of equal length, up to 16 or 256 MiB
// of logits a forward); the full-precision logits are computed once and kept (up to 2 GiB; beyond
// that they are recomputed per measurement).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kvlab/model/llama_model.h"
#include "kvlab/quant/cache_plan.h"

namespace kvlab::kvtuner {

enum class LossKind { KL, PPL };
LossKind parse_loss_kind(const std::string& s);  // "kl" | "ppl"

struct PlanLoss {
  double kl_mean = 0;    // mean KL(P_fp || P_plan) per predicted token
  double mean_nll = 0;   // under the plan
  double ref_nll = 0;    // full precision
  double value(LossKind k) const { return k == LossKind::KL ? kl_mean : mean_nll - ref_nll; }
};

class CalibrationLoss {
 public:
  CalibrationLoss(LlamaModel& model, std::vector<std::vector<int64_t>> windows);
  PlanLoss measure(const CachePlan& plan);
  int64_t predicted_tokens() const { return predicted_; }

 private:
  at::Tensor reference_logits(size_t b);  // [B, L-1, V] fp32 of batch b
  LlamaModel& model_;
  std::vector<at::Tensor> batches_;       // [B, L] int64 token ids; windows of equal length
  std::vector<at::Tensor> ref_;           // cached reference logits per batch (empty when too large)
  double ref_nll_sum_ = 0;
  int64_t predicted_ = 0;
};

}  // namespace kvlab::kvtuner
