// Task "throughput": batched greedy generation through the method's cache, timed and measured
// (kvlab/eval/throughput.h); one batch per cell, or with batch "max" the largest batch whose run
// fits the memory budget, found by running batches. Metrics: tokens/s (prefill, decode, steady
// decode, generated over the run, KVmix's count), the batch (and max_batch), peak memory and KV bytes.
#include <fmt/format.h>

#include <cmath>
#include <map>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"
#include "kvlab/eval/task.h"
#include "kvlab/eval/throughput.h"
#include "kvlab/model/llama_model.h"

namespace kvlab {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// "max" -> 0, a positive integer -> itself; anything else names the task's parameter.
int64_t parse_batch(const std::string& text) {
  if (text == "max") return 0;
  try {
    size_t used = 0;
    const int64_t b = std::stoll(text, &used);
    if (used == text.size() && b >= 1) return b;
  } catch (const std::exception&) {
  }
  fail("task throughput: parameter 'batch' = '{}' is not a positive integer or 'max'", text);
}

class ThroughputTask : public Task {
 public:
  using Task::Task;

  TaskResult run(TaskContext& ctx) override {
    const ParamSet& p = params();
    ThroughputOptions opt;
    opt.prompt_len = p.integer("prompt_len");
    opt.gen_len = p.integer("gen_len");
    opt.fill = parse_cache_fill(p.string("fill"), "task throughput: parameter 'fill'");
    opt.seed = ctx.seed;
    opt.warmup = p.boolean("warmup");
    opt.progress = ctx.progress ? stderr : nullptr;
    MemoryBudget budget;
    budget.kind = parse_budget_kind(p.string("budget"), "task throughput: parameter 'budget'");
    budget.bytes = static_cast<int64_t>(p.real("memory_budget") * kGiB);
    const int64_t batch = parse_batch(p.string("batch"));

    TaskResult r;
    ThroughputPoint point;
    nlohmann::json probes = nlohmann::json::array();
    if (batch == 0) {
      // Each probe is a full run; the points that fitted are kept so the largest is reported as is.
      std::map<int64_t, ThroughputPoint> fitted;
      const MaxBatchSearch s = search_max_batch(
          [&](int64_t b) {
            ThroughputPoint pt = run_throughput_point(ctx.model, ctx.plan, b, opt, budget);
            const BatchProbe out{!pt.over_budget && pt.measured(budget) <= budget.bytes, pt.measured(budget)};
            probes.push_back({{"batch", b}, {"fits", out.fits}, {"measured_gib", out.measured / kGiB},
                              {"decode_tok_s", pt.decode_tok_s()}});
            if (out.fits) fitted[b] = std::move(pt);
            return out;
          },
          budget.bytes, p.integer("max_batch_limit"));
      if (s.max_batch == 0)
        fail("task throughput: batch 1 does not fit the budget ({}; it measured {:.3f} GiB)", budget.describe(),
             s.probes.front().second.measured / kGiB);
      point = fitted.at(s.max_batch);
      r.metrics.push_back({"max_batch", static_cast<double>(s.max_batch)});
    } else {
      point = run_throughput_point(ctx.model, ctx.plan, batch, opt, budget);
    }
    r.metrics.push_back({"batch", static_cast<double>(point.batch)});
    r.metrics.push_back({"prefill_tok_s", point.prefill_tok_s()});
    r.metrics.push_back({"decode_tok_s", point.decode_tok_s()});
    r.metrics.push_back({"decode_tok_per_cpu_s", point.decode_tok_per_cpu_s()});
    r.metrics.push_back({"steady_decode_tok_s", point.steady_decode_tok_s()});
    r.metrics.push_back({"generate_tok_s", point.generate_tok_s()});
    r.metrics.push_back({"kvmix_tok_s", point.kvmix_tok_s()});
    r.metrics.push_back({"peak_memory_gib", point.peak_memory() / kGiB});
    r.metrics.push_back({"rss_before_gib", point.rss_before / kGiB});
    r.metrics.push_back({"dynamic_memory_gib", point.dynamic_memory() / kGiB});
    r.metrics.push_back({"kv_gib", point.bytes.total() / kGiB});
    if (budget.active()) r.metrics.push_back({"fits", point.over_budget || point.measured(budget) > budget.bytes ? 0.0 : 1.0});
    r.bits_k = point.bits_k();
    r.bits_v = point.bits_v();
    r.cache_bytes = point.bytes.total();
    r.memory_ratio = point.memory_ratio();
    r.seconds = point.prefill_seconds + point.decode_seconds;
    r.extra = point.to_json(/*with_steps=*/true);
    r.extra["budget"] = budget.describe();
    if (!probes.empty()) r.extra["probes"] = probes;
    return r;
  }
};

}  // namespace

TaskInfo throughput_task_info() {
  return {"throughput",
          "batched greedy generation through the cache: tokens/s, peak memory, KV bytes; batch 'max' = the "
          "largest batch whose run fits the memory budget",
          {ParamSpec::integer("prompt_len", 688, "prompt tokens per sequence (random ids)", 1),
           ParamSpec::integer("gen_len", 1024, "generated tokens per sequence (no early stop)", 1),
           ParamSpec::string("batch", "1", "sequences decoded together, or 'max' (needs memory_budget)"),
           ParamSpec::real("memory_budget", 0.0, "GiB; 0 = none", 0.0),
           ParamSpec::string("budget", "process",
                             "what the budget bounds: process (peak memory: weights + KV + activations + runtime), "
                             "dynamic (that peak minus the memory before the run: KVmix's figure) or kv (the KV "
                             "cache's bytes at the end)",
                             {"process", "dynamic", "kv"}),
           ParamSpec::string("fill", "prefill",
                             "prefill: a real forward over the prompts; synthetic: random K/V through the "
                             "method's quantizer (random-weight models)",
                             {"prefill", "synthetic"}),
           ParamSpec::integer("max_batch_limit", 1024, "batch 'max' searches up to this batch", 1),
           ParamSpec::boolean("warmup", true, "a short untimed generation at the same batch first")},
          [](const ParamSet& p) {
            const int64_t b = parse_batch(p.string("batch"));
            if (b == 0 && p.real("memory_budget") <= 0)
              fail("task throughput: batch 'max' needs a memory_budget (GiB) to search under");
            return std::make_unique<ThroughputTask>(p);
          },
          [](const ParamSet& p, const ModelConfig& c, const std::string&) {
            parse_batch(p.string("batch"));
            if (p.integer("prompt_len") + p.integer("gen_len") > c.max_position_embeddings)
              fail("task throughput: prompt_len {} + gen_len {} exceed the model's max_position_embeddings {}",
                   p.integer("prompt_len"), p.integer("gen_len"), c.max_position_embeddings);
          }};
}

}  // namespace kvlab
