#include "kvlab/eval/generate.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <limits>

#include "kvlab/common/error.h"

namespace kvlab {

double GenerateResult::decode_tokens_per_second() const {
  return decode_seconds > 0 ? static_cast<double>(tokens.size() * decode_steps) / decode_seconds : 0.0;
}

GenerateResult greedy_generate(LlamaModel& model, KvCache& cache,
                               const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& opt) {
  c10::AutoGradMode no_grad(false);
  if (prompts.empty()) fail("generate: no prompts");
  const size_t T = prompts.front().size();
  if (T == 0) fail("generate: empty prompt");
  for (const auto& p : prompts)
    if (p.size() != T) fail("generate: prompts of different lengths ({} vs {}) in one batch", p.size(), T);
  const int64_t B = static_cast<int64_t>(prompts.size());

  std::vector<int64_t> flat;
  for (const auto& p : prompts) flat.insert(flat.end(), p.begin(), p.end());
  at::Tensor ids = at::tensor(flat, at::kLong).view({B, static_cast<int64_t>(T)});

  using clock = std::chrono::steady_clock;
  GenerateResult r;
  r.tokens.resize(static_cast<size_t>(B));
  auto t0 = clock::now();
  at::Tensor logits;
  if (opt.prefill_token_by_token) {
    for (int64_t t = 0; t < static_cast<int64_t>(T); ++t)
      logits = model.forward(ids.narrow(1, t, 1), cache, std::nullopt, true);
  } else {
    logits = model.forward(ids, cache, std::nullopt, /*last_only=*/true);  // [B, 1, V]
  }
  r.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();

  std::vector<bool> done(static_cast<size_t>(B), false);
  auto t1 = clock::now();
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    at::Tensor step_logits = logits.select(1, 0);  // [B, V]
    if (step < opt.min_new_tokens && !opt.stop_ids.empty()) {
      step_logits = step_logits.clone();
      for (int64_t id : opt.stop_ids)
        if (id >= 0 && id < step_logits.size(1)) step_logits.select(1, id).fill_(-std::numeric_limits<float>::infinity());
    }
    at::Tensor next = step_logits.argmax(-1).to(at::kCPU);  // [B]
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[static_cast<size_t>(b)]) continue;
      const int64_t tok = next[b].item<int64_t>();
      r.tokens[static_cast<size_t>(b)].push_back(tok);
      if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), tok) != opt.stop_ids.end())
        done[static_cast<size_t>(b)] = true;
      all_done = all_done && done[static_cast<size_t>(b)];
    }
    if (all_done || step + 1 == opt.max_new_tokens) break;
    // Finished sequences keep decoding (their outputs are ignored) so the batch stays rectangular.
    logits = model.forward(next.view({B, 1}), cache, std::nullopt, true);
    r.decode_steps += 1;
  }
  r.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return r;
}

}  // namespace kvlab
