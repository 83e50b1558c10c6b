#pragma once
// Generation throughput and memory through a method's cache: B sequences of a P-token prompt, then
// N greedy tokens each, decoded together (one batched step per token through the method's decode
// kernels), timed step by step, with the bytes the cache holds (bytes()) and the process's (and a
// device's) peak memory. `kvlab bench throughput` and the runner's `throughput` task run it.
//
// Counting (stated in every output):
//   prefill tok/s         B * P / prefill time
//   decode tok/s          B * (N - 1) / decode time: every decode step, averaged over the generation
//                         (the first generated token comes from the prompt's forward; prompt tokens
//                         are never counted as generated)
//   steady decode tok/s   B / median decode step time
//   generate tok/s        B * N / (prefill + decode time): generated tokens over the whole run
//   kvmix tok/s           B * (P + N) / (prefill + decode time): KVmix's script divides the whole
//                         output length, prompt included, by the wall time
// Sequences never stop early (no EOS): every run has the same shape, as the papers' scripts force.
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvlab/cache/kv_cache.h"
#include "kvlab/quant/cache_plan.h"

namespace kvlab {

class LlamaModel;

// How the prompt's K/V get into the cache.
enum class CacheFill {
  Prefill,    // a real forward over the prompts (batched)
  Synthetic,  // random K/V of realistic statistics for the first P - 1 tokens, stored through the
              // method's own quantizer (LayerCache::fill), then a real forward of the last prompt
              // token; for random-weight shapes, where a prefill's content means nothing
};
std::string cache_fill_name(CacheFill f);                                  // "prefill" | "synthetic"
CacheFill parse_cache_fill(const std::string& name, const std::string& where);

// What a memory budget bounds.
struct MemoryBudget {
  enum class Kind {
    Process,  // the run's peak memory: the device allocator's peak on an accelerator with hooks,
              // else the process's peak resident set (weights + KV + activations + runtime)
    Dynamic,  // that peak minus the memory in use before the run (weights, runtime): what the run
              // adds, KV + activations; KVmix's memory figure ("peak minus model weights")
    Kv,       // the bytes the KV cache holds at the end of the run (bytes(), its largest point)
  };
  Kind kind = Kind::Process;
  int64_t bytes = 0;  // <= 0: no budget
  bool active() const { return bytes > 0; }
  std::string describe() const;  // "process peak <= 4.00 GiB", "KV bytes <= 1.00 GiB", "none"
};
MemoryBudget::Kind parse_budget_kind(const std::string& name, const std::string& where);  // process|dynamic|kv
std::string budget_kind_name(MemoryBudget::Kind k);

struct ThroughputOptions {
  int64_t prompt_len = 688;       // P
  int64_t gen_len = 1024;         // N generated tokens per sequence
  CacheFill fill = CacheFill::Prefill;
  uint64_t seed = 0;              // prompt ids and synthetic K/V
  bool warmup = true;             // a short untimed generation at the same batch first
  bool keep_tokens = false;       // keep the generated ids (tests)
  // The prompts' ids [batch][prompt_len] (tests); empty: random ids from the seed.
  std::vector<std::vector<int64_t>> prompts;
  std::FILE* progress = stderr;   // a progress line over decode steps (nullptr: none)
};

struct ThroughputPoint {
  std::string method;
  int64_t batch = 0, prompt_len = 0, gen_len = 0;
  CacheFill fill = CacheFill::Prefill;
  double prefill_seconds = 0;       // the prompts' forward (synthetic: the fill + the last prompt token's forward)
  double decode_seconds = 0;        // the N - 1 decode steps
  std::vector<double> step_seconds; // each decode step; step i runs with P + i cached tokens
  double prefill_cpu_seconds = 0;   // CPU time of the process (all threads) during the prefill
  double decode_cpu_seconds = 0;    // ... and during the decode steps
  CacheBytes bytes;                 // held at the end
  int64_t capacity_bytes = 0;       // allocated by the cache at the end (spare capacity included)
  int64_t elements_per_kind = 0;    // K (or V) elements held: B * tokens * layers * kv_heads * head_dim
  int64_t rss_before = -1;          // the process's resident set before the run (weights, runtime)
  int64_t peak_rss = -1;            // the process's peak resident set during the run
  int64_t peak_device = -1;         // the device allocator's peak during the run (-1: no device hooks)
  int64_t device_before = -1;       // the device allocator's use before the run (-1: no device hooks)
  bool over_budget = false;         // stopped early: the budget's measure exceeded it
  std::vector<std::vector<int64_t>> tokens;  // with keep_tokens: generated ids per sequence

  double bits_k() const;            // average stored bits per K element (bytes() * 8 / elements)
  double bits_v() const;
  double memory_ratio() const;      // bytes() / bytes of a 16-bit cache of the same tokens
  double prefill_tok_s() const;
  double decode_tok_s() const;
  double decode_tok_per_cpu_s() const;  // B * (N - 1) / decode CPU seconds: comparable on a loaded machine
  double steady_decode_tok_s() const;
  double generate_tok_s() const;
  double kvmix_tok_s() const;
  int64_t peak_memory() const;      // what a Process budget measures: peak_device if known, else peak_rss
  int64_t dynamic_memory() const;   // what a Dynamic budget measures: peak_memory() minus the use before
  int64_t measured(const MemoryBudget& b) const;  // the budget's measure of this run
  nlohmann::json to_json(bool with_steps = false) const;
};

// Runs one (plan, batch) point. Under an active budget the run stops as soon as the budget's
// measure exceeds it (checked after the prefill and after every decode step; the process's peak
// resident set catches peaks within a step) and comes back with over_budget set.
ThroughputPoint run_throughput_point(LlamaModel& model, const CachePlan& plan, int64_t batch,
                                     const ThroughputOptions& options, const MemoryBudget& budget = {});

// The largest batch whose run fits a budget, found by running batches: probe(b) runs batch b and
// says whether it fitted and what it measured. Batches 1 and 2 first, then the batch a line through
// the two largest fitting measurements predicts, then the one after it (which must not fit), with
// bisection after a missed prediction; every probe is a real run. Assumes the measure grows with
// the batch. max_batch is 0 when batch 1 does not fit, `limit` when nothing up to it fails.
struct BatchProbe {
  bool fits = false;
  int64_t measured = 0;
};
struct MaxBatchSearch {
  int64_t max_batch = 0;
  std::vector<std::pair<int64_t, BatchProbe>> probes;  // in the order run
};
MaxBatchSearch search_max_batch(const std::function<BatchProbe(int64_t)>& probe, int64_t budget_bytes,
                                int64_t limit);

// Fills a cache with P tokens of synthetic K/V: per layer keys [B, Hkv, P, D] with per-channel
// offsets and log-normal per-channel scales (the outlier channels that make real keys quantize
// per-channel), values Gaussian with a log-normal scale per token, in `dtype`, handed to each
// layer's fill(). Deterministic in the seed.
void fill_cache_synthetic(KvCache& cache, int64_t batch, int64_t tokens, int64_t kv_heads, int64_t head_dim,
                          c10::ScalarType dtype, c10::Device device, uint64_t seed);

}  // namespace kvlab
