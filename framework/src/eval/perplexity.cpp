#include "kvlab/eval/perplexity.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "kvlab/common/error.h"
#include "kvlab/common/progress.h"

namespace kvlab {

double PerplexityResult::mean_nll() const { return predicted > 0 ? nll_sum / predicted : NAN; }
double PerplexityResult::ppl() const { return std::exp(mean_nll()); }
double PerplexityResult::tokens_per_second() const {
  return seconds > 0 ? static_cast<double>(predicted + windows) / seconds : 0.0;
}

std::vector<std::vector<int64_t>> perplexity_windows(const std::vector<int32_t>& tokens,
                                                     const PerplexityOptions& opt) {
  if (opt.ctx < 2) fail("perplexity: context length {} too small (need >= 2)", opt.ctx);
  const int64_t text_per_window = opt.bos_id ? opt.ctx - 1 : opt.ctx;
  const int64_t n = static_cast<int64_t>(tokens.size());
  int64_t count = n / text_per_window;
  if (opt.max_windows > 0) count = std::min(count, opt.max_windows);
  if (count == 0)
    fail("perplexity: text has {} tokens, fewer than one window of {} (lower --ctx)", n, text_per_window);
  std::vector<std::vector<int64_t>> windows(static_cast<size_t>(count));
  for (int64_t w = 0; w < count; ++w) {
    auto& win = windows[static_cast<size_t>(w)];
    win.reserve(static_cast<size_t>(opt.ctx));
    if (opt.bos_id) win.push_back(*opt.bos_id);
    const auto begin = tokens.begin() + w * text_per_window;
    win.insert(win.end(), begin, begin + text_per_window);
  }
  return windows;
}

double nll_sum(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor logp = at::log_softmax(logits.to(at::kFloat), -1);
  at::Tensor picked = logp.gather(-1, targets.to(logits.device(), at::kLong).unsqueeze(-1));
  return -picked.to(at::kDouble).sum().item<double>();
}

PerplexityResult evaluate_perplexity(LlamaModel& model, const std::vector<int32_t>& tokens,
                                     const PerplexityOptions& opt, const std::function<KvCache()>& make_cache) {
  c10::AutoGradMode no_grad(false);
  const auto windows = perplexity_windows(tokens, opt);
  PerplexityResult r;
  Progress progress("eval ppl", static_cast<int64_t>(windows.size()), "windows", "tok", 10.0,
                    opt.progress ? stderr : nullptr);
  for (const auto& win : windows) {
    KvCache cache = make_cache ? make_cache() : model.make_full_precision_cache();
    at::Tensor ids = at::tensor(win, at::kLong).unsqueeze(0);  // [1, L]
    const at::Tensor hidden = model.forward_hidden(ids, cache).squeeze(0);  // [L, hidden]
    const int64_t L = ids.size(1);
    const at::Tensor targets = ids.squeeze(0).narrow(0, 1, L - 1);
    // The head a block of rows at a time: a window's whole logits would be [L, V] at once.
    for (int64_t r0 = 0; r0 < L - 1; r0 += kHeadRows) {
      const int64_t n = std::min(kHeadRows, L - 1 - r0);
      r.nll_sum += nll_sum(model.head(hidden.narrow(0, r0, n)), targets.narrow(0, r0, n));
    }
    r.predicted += L - 1;
    r.windows += 1;
    progress.advance(1, fmt::format("ppl {:.4f}", r.ppl()), L);
  }
  r.seconds = progress.elapsed_s();
  progress.finish(fmt::format("ppl {:.4f}", r.ppl()));
  return r;
}

}  // namespace kvlab
