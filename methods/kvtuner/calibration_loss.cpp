#include "calibration_loss.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/perplexity.h"

namespace kvlab::kvtuner {
namespace {

constexpr int64_t kMaxCachedReferenceBytes = int64_t{2} << 30;

at::Tensor window_ids(const std::vector<int64_t>& w) { return at::tensor(w, at::kLong).unsqueeze(0); }  // [1, L]

}  // namespace

LossKind parse_loss_kind(const std::string& s) {
  if (s == "kl") return LossKind::KL;
  if (s == "ppl") return LossKind::PPL;
  fail("kvtuner: loss '{}' is not kl or ppl", s);
}

CalibrationLoss::CalibrationLoss(LlamaModel& model, std::vector<std::vector<int64_t>> windows)
    : model_(model), windows_(std::move(windows)) {
  c10::AutoGradMode no_grad(false);
  if (windows_.empty()) fail("kvtuner: no calibration windows");
  int64_t bytes = 0;
  for (const auto& w : windows_) {
    if (w.size() < 2) fail("kvtuner: a calibration window needs at least 2 tokens");
    predicted_ += static_cast<int64_t>(w.size()) - 1;
    bytes += (static_cast<int64_t>(w.size()) - 1) * model_.config().vocab_size * 4;
  }
  const bool keep = bytes <= kMaxCachedReferenceBytes;
  for (size_t w = 0; w < windows_.size(); ++w) {
    at::Tensor ref = reference_logits(w);
    const int64_t L = static_cast<int64_t>(windows_[w].size());
    ref_nll_sum_ += nll_sum(ref, window_ids(windows_[w]).squeeze(0).narrow(0, 1, L - 1));
    if (keep) ref_.push_back(ref);
  }
}

at::Tensor CalibrationLoss::reference_logits(size_t w) {
  if (w < ref_.size()) return ref_[w];
  const at::Tensor ids = window_ids(windows_[w]);
  KvCache cache = model_.make_full_precision_cache();
  return model_.forward(ids, cache).squeeze(0).narrow(0, 0, ids.size(1) - 1);
}

PlanLoss CalibrationLoss::measure(const CachePlan& plan) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig& c = model_.config();
  plan.validate(c.num_hidden_layers, c.head_dim);
  double kl_sum = 0, nll = 0;
  for (size_t w = 0; w < windows_.size(); ++w) {
    const at::Tensor ids = window_ids(windows_[w]);
    const int64_t L = ids.size(1);
    KvCache cache = make_cache(plan, MultiTokenMode::TokenByToken);
    at::Tensor logits = model_.forward(ids, cache).squeeze(0).narrow(0, 0, L - 1);  // [L-1, V]
    nll += nll_sum(logits, ids.squeeze(0).narrow(0, 1, L - 1));
    at::Tensor lp_ref = at::log_softmax(reference_logits(w).to(at::kDouble), -1);
    at::Tensor lp_q = at::log_softmax(logits.to(at::kDouble), -1);
    kl_sum += (lp_ref.exp() * (lp_ref - lp_q)).sum(-1).clamp_min(0.0).sum().item<double>();
  }
  const auto n = static_cast<double>(predicted_);
  return {kl_sum / n, nll / n, ref_nll_sum_ / n};
}

}  // namespace kvlab::kvtuner
