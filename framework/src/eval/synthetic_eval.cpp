// Generation and exact-match scoring of passkey / needle prompts under a cache plan.
#include <algorithm>

#include <fmt/format.h>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/common/progress.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/passkey.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "../tokenizer/unicode.h"

namespace kvlab {

double SyntheticEvalResult::bits_k() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.keys.total()) / elements_per_kind : 0.0;
}
double SyntheticEvalResult::bits_v() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.values.total()) / elements_per_kind : 0.0;
}
double SyntheticEvalResult::memory_ratio() const {
  return elements_per_kind > 0 ? static_cast<double>(bytes.total()) / (2.0 * 2.0 * elements_per_kind) : 0.0;
}

SyntheticEvalResult evaluate_synthetic(LlamaModel& model, const Tokenizer& tok, const CachePlan& plan,
                                       const SyntheticEvalOptions& opt) {
  const ModelConfig& c = model.config();
  plan.validate(c.num_hidden_layers, c.head_dim);
  const std::string name = synthetic_kind_name(opt.kind);
  if (opt.samples < 1) fail("{}: samples must be >= 1, got {}", name, opt.samples);
  if (opt.batch < 1) fail("{}: batch must be >= 1, got {}", name, opt.batch);

  std::vector<SyntheticSample> samples;
  for (int64_t i = 0; i < opt.samples; ++i) samples.push_back(make_synthetic_sample(opt.kind, tok, opt.sample, i));

  GenerateOptions gen;
  gen.max_new_tokens = opt.max_new_tokens;
  gen.stop_ids = opt.stop_ids;
  SyntheticEvalResult r;
  Progress progress(fmt::format("eval {} {} L={} depth={}", name, plan.method, opt.sample.context_length,
                                opt.sample.depth),
                    opt.samples, "samples", "tok", 10.0, opt.progress ? stderr : nullptr);
  for (int64_t s = 0; s < opt.samples; s += opt.batch) {
    const int64_t n = std::min(opt.batch, opt.samples - s);
    std::vector<std::vector<int64_t>> ids;
    for (int64_t i = s; i < s + n; ++i) ids.emplace_back(samples[i].ids.begin(), samples[i].ids.end());
    KvCache cache = make_cache(plan, multi_token_mode(plan.prefill));
    const GenerateResult g = greedy_generate(model, cache, ids, gen);
    const CacheBytes bytes = cache.bytes();
    r.bytes += bytes;
    r.max_cache_bytes = std::max(r.max_cache_bytes, bytes.total());
    r.elements_per_kind += c.num_hidden_layers * c.num_key_value_heads * c.head_dim * cache.length() * n;
    int64_t tokens = 0;
    for (int64_t k = 0; k < n; ++k) {
      const SyntheticSample& sample = samples[static_cast<size_t>(s + k)];
      const auto& out = g.tokens[static_cast<size_t>(k)];
      const std::string text = unicode::utf8_lossy(tok.decode(std::vector<int32_t>(out.begin(), out.end()), true));
      r.answers.push_back(sample.answer);
      r.predictions.push_back(text);
      r.correct += synthetic_match(text, sample.answer) ? 1 : 0;
      r.mean_depth += sample.depth / static_cast<double>(opt.samples);
      tokens += static_cast<int64_t>(sample.ids.size() + out.size());
    }
    r.samples += n;
    progress.advance(n, fmt::format("acc {:.3f}", r.accuracy()), tokens);
  }
  r.seconds = progress.elapsed_s();
  progress.finish(fmt::format("acc {:.3f}", r.accuracy()));
  return r;
}

}  // namespace kvlab
