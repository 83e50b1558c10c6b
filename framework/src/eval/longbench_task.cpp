// Task "longbench": LongBench (v1) generation under the method's cache, scored as the benchmark
// scores it (kvlab/eval/longbench/evaluate.h). Metrics longbench/<task> and longbench/avg (0-100),
// and longbench_e/<task>/<bucket> with e: true.
#include <cmath>
#include <filesystem>

#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/evaluate.h"
#include "kvlab/eval/stop_tokens.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/llama_model.h"

namespace kvlab {
namespace {

std::string resolve(const std::string& path, const std::string& base) {
  std::filesystem::path p = path;
  if (p.is_relative() && !base.empty()) p = std::filesystem::path(base) / p;
  return p.string();
}

class LongBenchTask : public Task {
 public:
  using Task::Task;

  TaskResult run(TaskContext& ctx) override {
    const ParamSet& p = params();
    longbench::EvalOptions opt;
    opt.data_dir = resolve(p.string("data"), ctx.base_dir);
    opt.tasks = longbench::expand_task_list(p.string("tasks"));
    opt.longbench_e = p.boolean("e");
    opt.max_samples = p.integer("max_samples") > 0 ? p.integer("max_samples") : -1;
    opt.max_length = p.integer("max_length");
    opt.chat = longbench::resolve_chat_style(p.string("chat_template"), ctx.model_dir);
    opt.chat_system = longbench::resolve_chat_system(p.string("chat_template"), ctx.model_dir);
    opt.batch = p.integer("batch");
    opt.max_new_tokens = p.integer("max_new_tokens");
    opt.stop_ids = stop_token_ids(ctx.model_dir, ctx.model.config(), ctx.tokenizer);
    if (!p.string("out").empty()) opt.out_dir = resolve(p.string("out"), ctx.base_dir);
    opt.progress = ctx.progress;
    const longbench::EvalResult e = longbench::evaluate_longbench(ctx.model, ctx.tokenizer, ctx.plan, opt);

    TaskResult r;
    nlohmann::json per_task = nlohmann::json::object();
    for (const auto& t : e.tasks) {
      r.metrics.push_back({"longbench/" + t.score.task, t.score.score});
      if (opt.longbench_e)
        for (size_t b = 0; b < 3; ++b)
          if (!std::isnan(t.score.buckets[b]))
            r.metrics.push_back({"longbench_e/" + t.score.task + "/" + longbench::kLengthBuckets[b], t.score.buckets[b]});
      per_task[t.score.task] = {{"records", t.score.records},         {"truncated", t.truncated},
                                {"max_length", t.max_length},         {"max_new_tokens", t.max_new_tokens},
                                {"prompt_tokens", t.prompt_tokens},   {"generated_tokens", t.generated_tokens},
                                {"prefill_seconds", t.prefill_seconds}, {"decode_seconds", t.decode_seconds}};
    }
    r.metrics.push_back({"longbench/avg", e.average});
    r.bits_k = e.bits_k();
    r.bits_v = e.bits_v();
    r.cache_bytes = e.max_cache_bytes;
    r.memory_ratio = e.memory_ratio();
    r.seconds = e.seconds;
    r.extra = {{"data", opt.data_dir}, {"chat_template", longbench::chat_style_name(opt.chat)}, {"tasks", per_task}};
    if (!opt.out_dir.empty()) r.extra["predictions"] = opt.out_dir;
    return r;
  }
};

}  // namespace

TaskInfo longbench_task_info() {
  std::vector<std::string> chats = {"auto"};
  for (const auto& c : longbench::chat_style_names()) chats.push_back(c);
  return {"longbench",
          "LongBench v1 (16 English/code tasks): greedy generation through the cache, scored as the benchmark's scorer",
          {ParamSpec::string("data", "", "directory of the benchmark's <task>.jsonl files (relative to the experiment file's folder)"),
           ParamSpec::string("tasks", "all", "all (16 English/code tasks), e (the 13 LongBench-E tasks) or comma-separated names"),
           ParamSpec::boolean("e", false, "LongBench-E: read <task>_e.jsonl and add 0-4k / 4-8k / 8k+ length-bucket scores"),
           ParamSpec::integer("max_samples", -1, "the first N records of each task (<= 0: all)"),
           ParamSpec::integer("max_length", 0, "prompt budget in tokens, cut in the middle beyond it (0: model context minus the task's generation length)", 0),
           ParamSpec::string("chat_template", "auto", "chat template for the tasks the benchmark wraps (auto: from tokenizer_config.json)", chats),
           ParamSpec::integer("batch", 1, "prompts of equal token length generated together", 1),
           ParamSpec::integer("max_new_tokens", 0, "generation length (0: the benchmark's per task)", 0),
           ParamSpec::string("out", "", "directory for <task>.jsonl prediction files (empty: not written)")},
          [](const ParamSet& p) {
            if (p.string("data").empty()) fail("task longbench: parameter 'data' is required (the directory of <task>.jsonl files)");
            longbench::expand_task_list(p.string("tasks"));  // validate names now
            return std::make_unique<LongBenchTask>(p);
          }};
}

}  // namespace kvlab
