#include "kvlab/eval/throughput.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/common/process_usage.h"
#include "kvlab/common/progress.h"
#include "kvlab/model/llama_model.h"

namespace kvlab {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
double gib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

// The device's peak memory since the last reset (-1 without hooks).
int64_t device_peak(const c10::Device& d) {
  if (d.is_cpu()) return -1;
  const DeviceMemoryHooks* h = device_memory_hooks(d.type());
  return h && h->peak_bytes ? h->peak_bytes(d) : -1;
}
int64_t device_current(const c10::Device& d) {
  if (d.is_cpu()) return -1;
  const DeviceMemoryHooks* h = device_memory_hooks(d.type());
  return h && h->current_bytes ? h->current_bytes(d) : -1;
}
void reset_device_peak(const c10::Device& d) {
  if (d.is_cpu()) return;
  const DeviceMemoryHooks* h = device_memory_hooks(d.type());
  if (h && h->reset_peak) h->reset_peak(d);
}

// One short generation at the batch, untimed: thread pools, first-touch pages, kernel tables.
void warm_up(LlamaModel& model, const CachePlan& plan, int64_t batch, int64_t vocab) {
  KvCache cache = make_cache(plan, multi_token_mode(plan.prefill));
  at::Tensor ids = at::randint(0, vocab, {batch, 16}, at::TensorOptions().dtype(at::kLong));
  at::Tensor logits = model.forward(ids, cache, std::nullopt, true);
  for (int i = 0; i < 4; ++i) logits = model.forward(logits.argmax(-1), cache, std::nullopt, true);
}

}  // namespace

std::string cache_fill_name(CacheFill f) { return f == CacheFill::Prefill ? "prefill" : "synthetic"; }

CacheFill parse_cache_fill(const std::string& name, const std::string& where) {
  if (name == "prefill") return CacheFill::Prefill;
  if (name == "synthetic") return CacheFill::Synthetic;
  fail("{}: cache fill '{}' is not prefill or synthetic", where, name);
}

std::string budget_kind_name(MemoryBudget::Kind k) {
  return k == MemoryBudget::Kind::Kv ? "kv" : k == MemoryBudget::Kind::Dynamic ? "dynamic" : "process";
}

MemoryBudget::Kind parse_budget_kind(const std::string& name, const std::string& where) {
  if (name == "process") return MemoryBudget::Kind::Process;
  if (name == "dynamic") return MemoryBudget::Kind::Dynamic;
  if (name == "kv") return MemoryBudget::Kind::Kv;
  fail("{}: memory budget kind '{}' is not process, dynamic or kv", where, name);
}

std::string MemoryBudget::describe() const {
  if (!active()) return "none";
  const char* what = kind == Kind::Kv        ? "KV bytes"
                     : kind == Kind::Dynamic ? "peak memory minus the memory before the run"
                                             : "peak memory";
  return fmt::format("{} <= {:.4g} GiB", what, gib(bytes));
}

double ThroughputPoint::bits_k() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.keys.total()) / elements_per_kind : 0.0;
}
double ThroughputPoint::bits_v() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.values.total()) / elements_per_kind : 0.0;
}
double ThroughputPoint::memory_ratio() const {
  return elements_per_kind > 0 ? static_cast<double>(bytes.total()) / (4.0 * elements_per_kind) : 0.0;
}
double ThroughputPoint::prefill_tok_s() const {
  return prefill_seconds > 0 ? static_cast<double>(batch * prompt_len) / prefill_seconds : 0.0;
}
double ThroughputPoint::decode_tok_s() const {
  return decode_seconds > 0 ? static_cast<double>(batch) * static_cast<double>(step_seconds.size()) / decode_seconds
                            : 0.0;
}
double ThroughputPoint::decode_tok_per_cpu_s() const {
  return decode_cpu_seconds > 0
             ? static_cast<double>(batch) * static_cast<double>(step_seconds.size()) / decode_cpu_seconds
             : 0.0;
}
double ThroughputPoint::steady_decode_tok_s() const {
  if (step_seconds.empty()) return 0.0;
  std::vector<double> s = step_seconds;
  std::nth_element(s.begin(), s.begin() + static_cast<int64_t>(s.size() / 2), s.end());
  const double median = s[s.size() / 2];
  return median > 0 ? static_cast<double>(batch) / median : 0.0;
}
double ThroughputPoint::generate_tok_s() const {
  const double t = prefill_seconds + decode_seconds;
  return t > 0 ? static_cast<double>(batch * gen_len) / t : 0.0;
}
double ThroughputPoint::kvmix_tok_s() const {
  const double t = prefill_seconds + decode_seconds;
  return t > 0 ? static_cast<double>(batch * (prompt_len + gen_len)) / t : 0.0;
}
int64_t ThroughputPoint::peak_memory() const { return peak_device >= 0 ? peak_device : peak_rss; }
int64_t ThroughputPoint::dynamic_memory() const {
  return peak_device >= 0 ? peak_device - device_before : peak_rss - rss_before;
}
int64_t ThroughputPoint::measured(const MemoryBudget& b) const {
  switch (b.kind) {
    case MemoryBudget::Kind::Kv: return bytes.total();
    case MemoryBudget::Kind::Dynamic: return dynamic_memory();
    default: return peak_memory();
  }
}

nlohmann::json ThroughputPoint::to_json(bool with_steps) const {
  nlohmann::json j = {{"method", method},
                      {"batch", batch},
                      {"prompt_len", prompt_len},
                      {"gen_len", gen_len},
                      {"fill", cache_fill_name(fill)},
                      {"prefill_seconds", prefill_seconds},
                      {"decode_seconds", decode_seconds},
                      {"decode_steps", static_cast<int64_t>(step_seconds.size())},
                      {"prefill_tok_s", prefill_tok_s()},
                      {"decode_tok_s", decode_tok_s()},
                      {"decode_tok_per_cpu_s", decode_tok_per_cpu_s()},
                      {"prefill_cpu_seconds", prefill_cpu_seconds},
                      {"decode_cpu_seconds", decode_cpu_seconds},
                      {"steady_decode_tok_s", steady_decode_tok_s()},
                      {"generate_tok_s", generate_tok_s()},
                      {"kvmix_tok_s", kvmix_tok_s()},
                      {"kv_bytes", bytes.total()},
                      {"kv_bytes_k", bytes.keys.total()},
                      {"kv_bytes_v", bytes.values.total()},
                      {"kv_capacity_bytes", capacity_bytes},
                      {"bits_k", bits_k()},
                      {"bits_v", bits_v()},
                      {"memory_ratio", memory_ratio()},
                      {"rss_before_bytes", rss_before},
                      {"peak_rss_bytes", peak_rss},
                      {"peak_device_bytes", peak_device},
                      {"device_before_bytes", device_before},
                      {"dynamic_memory_bytes", dynamic_memory()},
                      {"over_budget", over_budget}};
  if (with_steps) j["step_seconds"] = step_seconds;
  return j;
}

void fill_cache_synthetic(KvCache& cache, int64_t batch, int64_t tokens, int64_t kv_heads, int64_t head_dim,
                          c10::ScalarType dtype, c10::Device device, uint64_t seed) {
  if (tokens <= 0) return;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    // Keys: a per-(head, channel) offset and scale; scales log-normal, so a few channels are several
    // times larger than the rest, as in real post-RoPE keys.
    at::Tensor mu = at::normal(0.0, 0.5, {1, kv_heads, 1, head_dim}, gen, f32);
    at::Tensor sigma = at::normal(0.0, 0.6, {1, kv_heads, 1, head_dim}, gen, f32).exp_();
    at::Tensor k = at::normal(0.0, 1.0, {batch, kv_heads, tokens, head_dim}, gen, f32).mul_(sigma).add_(mu);
    // Values: Gaussian, a log-normal scale per token.
    at::Tensor s = at::normal(0.0, 0.3, {batch, kv_heads, tokens, 1}, gen, f32).exp_();
    at::Tensor v = at::normal(0.0, 1.0, {batch, kv_heads, tokens, head_dim}, gen, f32).mul_(s);
    cache.layer(l).fill(k.to(device, dtype), v.to(device, dtype));
  }
}

ThroughputPoint run_throughput_point(LlamaModel& model, const CachePlan& plan, int64_t batch,
                                     const ThroughputOptions& opt, const MemoryBudget& budget) {
  c10::AutoGradMode no_grad(false);
  const ModelConfig& c = model.config();
  if (batch < 1) fail("throughput: batch must be >= 1, got {}", batch);
  if (opt.prompt_len < 1 || opt.gen_len < 1)
    fail("throughput: prompt length {} and generation length {} must be >= 1", opt.prompt_len, opt.gen_len);
  if (opt.prompt_len + opt.gen_len > c.max_position_embeddings)
    fail("throughput: prompt {} + generated {} tokens exceed the model's {} positions", opt.prompt_len, opt.gen_len,
         c.max_position_embeddings);
  plan.validate(c.num_hidden_layers, c.head_dim);
  const c10::Device device = model.device();

  if (opt.warmup) warm_up(model, plan, batch, c.vocab_size);

  ThroughputPoint p;
  p.method = plan.method;
  p.batch = batch, p.prompt_len = opt.prompt_len, p.gen_len = opt.gen_len, p.fill = opt.fill;
  // The prompts: distinct random ids per sequence (their content does not change the work).
  at::Generator gen = at::detail::createCPUGenerator(opt.seed);
  at::Tensor prompts = at::randint(0, c.vocab_size, {batch, opt.prompt_len}, gen, at::TensorOptions().dtype(at::kLong));
  if (!opt.prompts.empty()) {
    if (static_cast<int64_t>(opt.prompts.size()) != batch) fail("throughput: {} prompts for batch {}", opt.prompts.size(), batch);
    for (int64_t b = 0; b < batch; ++b) {
      const auto& ids = opt.prompts[static_cast<size_t>(b)];
      if (static_cast<int64_t>(ids.size()) != opt.prompt_len)
        fail("throughput: prompt {} has {} tokens, not {}", b, ids.size(), opt.prompt_len);
      prompts[b].copy_(at::tensor(ids, at::kLong));
    }
  }
  prompts = prompts.to(device);

  reset_peak_rss();
  reset_device_peak(device);
  p.rss_before = current_rss_bytes();
  p.device_before = device_current(device);
  auto over = [&](const KvCache& cache) {
    if (!budget.active()) return false;
    if (budget.kind == MemoryBudget::Kind::Kv) return cache.bytes().total() > budget.bytes;
    const int64_t dev = device_peak(device);
    const int64_t peak = dev >= 0 ? dev : peak_rss_bytes();
    const int64_t before = dev >= 0 ? p.device_before : p.rss_before;
    return (budget.kind == MemoryBudget::Kind::Dynamic ? peak - before : peak) > budget.bytes;
  };
  auto finish = [&](const KvCache& cache, int64_t tokens) {
    p.bytes = cache.bytes();
    int64_t capacity = 0;
    for (int64_t l = 0; l < cache.num_layers(); ++l) capacity += cache.layer(l).capacity_bytes();
    p.capacity_bytes = capacity;
    p.elements_per_kind = batch * tokens * c.num_hidden_layers * c.num_key_value_heads * c.head_dim;
    p.peak_rss = peak_rss_bytes();
    p.peak_device = device_peak(device);
  };

  KvCache cache = make_cache(plan, multi_token_mode(plan.prefill));
  const double cpu0 = process_cpu_seconds();
  auto t0 = Clock::now();
  at::Tensor logits;
  if (opt.fill == CacheFill::Prefill) {
    logits = model.forward(prompts, cache, std::nullopt, /*last_only=*/true);  // [B, 1, V]
  } else {
    fill_cache_synthetic(cache, batch, opt.prompt_len - 1, c.num_key_value_heads, c.head_dim, model.dtype(), device,
                         opt.seed + 1);
    logits = model.forward(prompts.narrow(1, opt.prompt_len - 1, 1), cache, std::nullopt, true);
  }
  at::Tensor next = logits.select(1, 0).argmax(-1).to(at::kCPU);  // [B]; the copy waits for the device
  p.prefill_seconds = since(t0);
  const double cpu1 = process_cpu_seconds();
  p.prefill_cpu_seconds = cpu1 - cpu0;
  if (opt.keep_tokens) p.tokens.assign(static_cast<size_t>(batch), {});
  auto keep = [&](const at::Tensor& ids) {
    if (!opt.keep_tokens) return;
    for (int64_t b = 0; b < batch; ++b) p.tokens[static_cast<size_t>(b)].push_back(ids[b].item<int64_t>());
  };
  keep(next);
  if (over(cache)) {
    p.over_budget = true;
    finish(cache, opt.prompt_len);
    return p;
  }

  const int64_t steps = opt.gen_len - 1;
  Progress progress(fmt::format("throughput {} batch {}", plan.method, batch), steps, "steps", "tok", 10.0,
                    opt.progress);
  p.step_seconds.reserve(static_cast<size_t>(steps));
  const auto t1 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    const auto ts = Clock::now();
    logits = model.forward(next.view({batch, 1}).to(device), cache, std::nullopt, true);
    next = logits.select(1, 0).argmax(-1).to(at::kCPU);
    p.step_seconds.push_back(since(ts));
    keep(next);
    progress.advance(1, "", batch);
    if (over(cache)) {
      p.over_budget = true;
      break;
    }
  }
  p.decode_seconds = since(t1);
  p.decode_cpu_seconds = process_cpu_seconds() - cpu1;
  progress.finish(p.over_budget ? "over the memory budget: stopped" : fmt::format("{:.1f} tok/s", p.decode_tok_s()));
  finish(cache, opt.prompt_len + static_cast<int64_t>(p.step_seconds.size()));
  return p;
}

MaxBatchSearch search_max_batch(const std::function<BatchProbe(int64_t)>& probe, int64_t budget_bytes, int64_t limit) {
  if (limit < 1) fail("max batch search: limit must be >= 1, got {}", limit);
  MaxBatchSearch r;
  int64_t lo = 0, hi = limit + 1;                 // lo: largest batch that fitted; hi: smallest that did not
  std::vector<std::pair<int64_t, int64_t>> fits;  // (batch, measured) of the fitting runs, ascending
  bool predicted = false;                         // the batch just run was a prediction
  int misses = 0;                                 // predictions that did not fit
  int64_t b = 1;
  while (true) {
    const BatchProbe out = probe(b);
    r.probes.push_back({b, out});
    if (out.fits) {
      lo = b;
      fits.push_back({b, out.measured});
      std::sort(fits.begin(), fits.end());
    } else {
      hi = b;
    }
    if (lo + 1 >= hi) break;  // the boundary is known (batch 1 does not fit, or the limit fits)
    const bool missed = predicted && !out.fits;
    misses += missed ? 1 : 0;
    int64_t guess;
    bool by_line = false;
    if ((missed && misses > 1) || (fits.size() < 2 && hi <= limit)) {
      guess = (lo + hi) / 2;  // bisection
    } else if (missed) {
      // The first prediction that misses is usually just over: the line comes from the runs' end
      // values, and a run's peak can sit a little above its end (a window that fills, then flushes).
      guess = b - std::max<int64_t>(1, b / 32);
      by_line = true;
    } else if (fits.size() < 2) {
      guess = 2 * lo;
    } else {
      // The batch at which a line through the two largest fitting runs meets the budget.
      const auto [b1, m1] = fits[fits.size() - 2];
      const auto [b2, m2] = fits.back();
      const double slope = static_cast<double>(m2 - m1) / static_cast<double>(b2 - b1);
      guess = slope > 0 ? b2 + static_cast<int64_t>(std::floor(static_cast<double>(budget_bytes - m2) / slope))
                        : 2 * lo;
      by_line = true;
    }
    predicted = by_line;
    b = std::clamp(guess, lo + 1, hi - 1);
  }
  r.max_batch = lo;
  return r;
}

}  // namespace kvlab
