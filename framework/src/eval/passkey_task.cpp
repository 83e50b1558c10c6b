// Tasks "passkey" and "needle": exact-match retrieval of a number hidden at a depth in generated
// filler (kvlab/eval/passkey.h); one (context length, depth) per task instance, so a sweep over
// both is a grid of the runner.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/eval/passkey.h"
#include "kvlab/eval/stop_tokens.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {
namespace {

std::vector<ParamSpec> common_params() {
  return {ParamSpec::integer("context_length", 1024, "prompt length in tokens (exact)", 16),
          ParamSpec::real("depth", 0.5, "needle position in the filler: 0 = start, 1 = end", 0.0, 1.0),
          ParamSpec::integer("samples", 8, "prompts (each a different key from the seed)", 1),
          ParamSpec::integer("seed", 0, "seed of the keys, positions and haystack offsets", 0),
          ParamSpec::integer("digits", 5, "digits of the pass key (needle: value has digits + 2)", 1, 16),
          ParamSpec::integer("batch", 8, "prompts generated together (all have the same length)", 1),
          ParamSpec::integer("max_new_tokens", 16, "greedy generation length", 1)};
}

class SyntheticTask : public Task {
 public:
  SyntheticTask(ParamSet params, SyntheticKind kind) : Task(std::move(params)), kind_(kind) {}

  TaskResult run(TaskContext& ctx) override {
    const ParamSet& p = params();
    SyntheticEvalOptions opt;
    opt.kind = kind_;
    opt.sample.context_length = p.integer("context_length");
    opt.sample.depth = p.real("depth");
    opt.sample.seed = static_cast<uint64_t>(p.integer("seed"));
    opt.sample.digits = p.integer("digits");
    opt.samples = p.integer("samples");
    opt.batch = p.integer("batch");
    opt.max_new_tokens = p.integer("max_new_tokens");
    opt.progress = ctx.progress;
    opt.stop_ids = stop_token_ids(ctx.model_dir, ctx.model.config(), ctx.tokenizer);
    std::string haystack_path;
    if (kind_ == SyntheticKind::Needle && !p.string("haystack").empty()) {
      std::filesystem::path path = p.string("haystack");
      if (path.is_relative() && !ctx.base_dir.empty()) path = std::filesystem::path(ctx.base_dir) / path;
      check_input_file(path.string(), "haystack file");
      std::ifstream in(path, std::ios::binary);
      if (!in) fail("task needle: cannot read haystack file '{}'", path.string());
      std::ostringstream s;
      s << in.rdbuf();
      opt.sample.haystack = s.str();
      haystack_path = path.string();
    }
    const SyntheticEvalResult e = evaluate_synthetic(ctx.model, ctx.tokenizer, ctx.plan, opt);

    const std::string name = synthetic_kind_name(kind_);
    TaskResult r;
    r.metrics = {{name + "/acc", e.accuracy()}};
    r.bits_k = e.bits_k();
    r.bits_v = e.bits_v();
    r.cache_bytes = e.max_cache_bytes;
    r.memory_ratio = e.memory_ratio();
    r.seconds = e.seconds;
    r.extra = {{"samples", e.samples}, {"correct", e.correct}, {"realised_depth", e.mean_depth},
               {"answers", e.answers}, {"predictions", e.predictions}};
    if (!haystack_path.empty()) r.extra["haystack"] = haystack_path;
    return r;
  }

 private:
  SyntheticKind kind_;
};

}  // namespace

TaskInfo passkey_task_info() {
  return {"passkey", "pass key retrieval: a number hidden at a depth in repeated filler, exact match of the answer",
          common_params(), [](const ParamSet& p) { return std::make_unique<SyntheticTask>(p, SyntheticKind::Passkey); }};
}

TaskInfo needle_task_info() {
  auto params = common_params();
  params.push_back(ParamSpec::string(
      "haystack", "", "haystack text file (relative to the experiment file's folder); empty: built-in prose"));
  return {"needle", "needle in a haystack: a secret number placed at a sentence end at a depth, exact match",
          params, [](const ParamSet& p) { return std::make_unique<SyntheticTask>(p, SyntheticKind::Needle); }};
}

}  // namespace kvlab
