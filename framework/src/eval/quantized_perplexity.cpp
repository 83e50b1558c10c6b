#include "kvlab/eval/quantized_perplexity.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/common/progress.h"

namespace kvlab {

double QuantizedPerplexityResult::bits_k() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.keys.total()) / elements_per_kind : 0.0;
}
double QuantizedPerplexityResult::bits_v() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.values.total()) / elements_per_kind : 0.0;
}
double QuantizedPerplexityResult::memory_ratio() const {
  return elements_per_kind > 0 ? static_cast<double>(bytes.total()) / (2.0 * 2.0 * elements_per_kind) : 0.0;
}

QuantizedPerplexityResult evaluate_quantized_perplexity(LlamaModel& model, const std::vector<int32_t>& tokens,
                                                        const PerplexityOptions& opt, const CachePlan& plan,
                                                        PerplexityPath path) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig& c = model.config();
  plan.validate(c.num_hidden_layers, c.head_dim);
  const auto windows = perplexity_windows(tokens, opt);
  QuantizedPerplexityResult r;
  std::vector<float> kl_all;
  int64_t agree = 0;
  double delta_p = 0;
  Progress progress("eval ppl " + plan.method, static_cast<int64_t>(windows.size()), "windows", "tok", 10.0,
                    opt.progress ? stderr : nullptr);
  for (const auto& win : windows) {
    at::Tensor ids = at::tensor(win, at::kLong).unsqueeze(0);  // [1, L]
    const int64_t L = ids.size(1);
    KvCache fp_cache = model.make_full_precision_cache();
    const at::Tensor ref_h = model.forward_hidden(ids, fp_cache).squeeze(0).narrow(0, 0, L - 1);  // [L-1, hidden]

    KvCache cache = make_cache(plan, MultiTokenMode::TokenByToken);
    at::Tensor q_h;
    if (path == PerplexityPath::Fast) {
      q_h = model.forward_hidden(ids, cache).squeeze(0);
    } else {
      std::vector<at::Tensor> steps;
      steps.reserve(static_cast<size_t>(L));
      for (int64_t t = 0; t < L; ++t) steps.push_back(model.forward_hidden(ids.narrow(1, t, 1), cache).squeeze(0));
      q_h = at::cat(steps, 0);
    }
    q_h = q_h.narrow(0, 0, L - 1);
    const at::Tensor all_targets = ids.squeeze(0).narrow(0, 1, L - 1);

    // The head and every per-token measure a block of rows at a time (a window's logits are [L, V],
    // and their float64 log-softmax twice that).
    for (int64_t r0 = 0; r0 < L - 1; r0 += kHeadRows) {
      const int64_t n = std::min(kHeadRows, L - 1 - r0);
      const at::Tensor ref = model.head(ref_h.narrow(0, r0, n)), logits = model.head(q_h.narrow(0, r0, n));
      const at::Tensor targets = all_targets.narrow(0, r0, n);
      r.reference.nll_sum += nll_sum(ref, targets), r.quantized.nll_sum += nll_sum(logits, targets);

      at::Tensor lp_ref = at::log_softmax(ref.to(at::kDouble), -1), lp_q = at::log_softmax(logits.to(at::kDouble), -1);
      at::Tensor kl = (lp_ref.exp() * (lp_ref - lp_q)).sum(-1).clamp_min(0.0);  // [n]
      at::Tensor klf = kl.to(at::kFloat).contiguous();
      kl_all.insert(kl_all.end(), klf.data_ptr<float>(), klf.data_ptr<float>() + klf.numel());
      agree += (ref.argmax(-1) == logits.argmax(-1)).sum().item<int64_t>();
      at::Tensor tgt = targets.unsqueeze(-1);
      delta_p += (lp_q.gather(-1, tgt).exp() - lp_ref.gather(-1, tgt).exp()).sum().item<double>();
    }
    r.reference.predicted += L - 1, r.quantized.predicted += L - 1;
    r.reference.windows += 1, r.quantized.windows += 1;

    r.bytes = cache.bytes();
    r.elements_per_kind = c.num_hidden_layers * c.num_key_value_heads * c.head_dim * L;
    progress.advance(1, fmt::format("ppl fp {:.4f} quant {:.4f}", r.reference.ppl(), r.quantized.ppl()), L);
  }
  r.quantized.seconds = r.reference.seconds = progress.elapsed_s();
  progress.finish(fmt::format("ppl fp {:.4f} quant {:.4f}", r.reference.ppl(), r.quantized.ppl()));

  const auto n = static_cast<double>(kl_all.size());
  double sum = 0;
  for (float v : kl_all) sum += v;
  r.kl_mean = sum / n;
  std::sort(kl_all.begin(), kl_all.end());
  r.kl_p99 = kl_all[std::min(kl_all.size() - 1, static_cast<size_t>(std::ceil(0.99 * n)) - 1)];
  r.top1_agreement = static_cast<double>(agree) / n;
  r.delta_p_correct = delta_p / n;
  return r;
}

}  // namespace kvlab
