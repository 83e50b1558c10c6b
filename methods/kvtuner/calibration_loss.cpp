#include "calibration_loss.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/perplexity.h"

namespace kvlab::kvtuner {
namespace {

constexpr int64_t kMaxCachedReferenceBytes = int64_t{2} << 30;
constexpr int64_t kMaxBatchLogitBytes = int64_t{256} << 20;
constexpr int64_t kMaxBatch = 16;

// [B, L-1] next-token targets of a batch of windows.
at::Tensor targets(const at::Tensor& ids) { return ids.narrow(1, 1, ids.size(1) - 1); }

}  // namespace

LossKind parse_loss_kind(const std::string& s) {
  if (s == "kl") return LossKind::KL;
  if (s == "ppl") return LossKind::PPL;
  fail("kvtuner: loss '{}' is not kl or ppl", s);
}

CalibrationLoss::CalibrationLoss(LlamaModel& model, std::vector<std::vector<int64_t>> windows) : model_(model) {
  c10::AutoGradMode no_grad(false);
  if (windows.empty()) fail("kvtuner: no calibration windows");
  const int64_t V = model_.config().vocab_size;
  int64_t bytes = 0;
  std::vector<std::vector<int64_t>> batch;  // consecutive windows of one length
  auto close = [&] {
    if (batch.empty()) return;
    std::vector<int64_t> flat;
    for (const auto& w : batch) flat.insert(flat.end(), w.begin(), w.end());
    batches_.push_back(at::tensor(flat, at::kLong).view({static_cast<int64_t>(batch.size()), -1}));
    batch.clear();
  };
  for (auto& w : windows) {
    const auto L = static_cast<int64_t>(w.size());
    if (L < 2) fail("kvtuner: a calibration window needs at least 2 tokens");
    predicted_ += L - 1;
    bytes += (L - 1) * V * 4;
    const auto B = static_cast<int64_t>(batch.size());
    if (B > 0 && (static_cast<int64_t>(batch[0].size()) != L || B + 1 > kMaxBatch || (B + 1) * L * V * 4 > kMaxBatchLogitBytes))
      close();
    batch.push_back(std::move(w));
  }
  close();
  const bool keep = bytes <= kMaxCachedReferenceBytes;
  for (size_t b = 0; b < batches_.size(); ++b) {
    at::Tensor ref = reference_logits(b);
    ref_nll_sum_ += nll_sum(ref.reshape({-1, V}), targets(batches_[b]).reshape({-1}));
    if (keep) ref_.push_back(ref);
  }
}

at::Tensor CalibrationLoss::reference_logits(size_t b) {
  if (b < ref_.size()) return ref_[b];
  const at::Tensor& ids = batches_[b];
  KvCache cache = model_.make_full_precision_cache();
  return model_.forward(ids, cache).narrow(1, 0, ids.size(1) - 1);
}

PlanLoss CalibrationLoss::measure(const CachePlan& plan) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig& c = model_.config();
  plan.validate(c.num_hidden_layers, c.head_dim);
  const int64_t V = c.vocab_size;
  double kl_sum = 0, nll = 0;
  for (size_t b = 0; b < batches_.size(); ++b) {
    const at::Tensor& ids = batches_[b];
    KvCache cache = make_cache(plan, MultiTokenMode::TokenByToken);
    at::Tensor logits = model_.forward(ids, cache).narrow(1, 0, ids.size(1) - 1).reshape({-1, V});  // [B*(L-1), V]
    nll += nll_sum(logits, targets(ids).reshape({-1}));
    at::Tensor lp_ref = at::log_softmax(reference_logits(b).reshape({-1, V}).to(at::kDouble), -1);
    at::Tensor lp_q = at::log_softmax(logits.to(at::kDouble), -1);
    kl_sum += (lp_ref.exp() * (lp_ref - lp_q)).sum(-1).clamp_min(0.0).sum().item<double>();
  }
  const auto n = static_cast<double>(predicted_);
  return {kl_sum / n, nll / n, ref_nll_sum_ / n};
}

}  // namespace kvlab::kvtuner
