// Task "ppl": perplexity over non-overlapping windows of a text file under the method's cache,
// with KL to the full-precision model (kvlab/eval/quantized_perplexity.h).
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {
namespace {

std::string read_all(const std::string& path) {
  check_input_file(path, "text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("task ppl: cannot read text file '{}'", path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class PerplexityTask : public Task {
 public:
  using Task::Task;

  TaskResult run(TaskContext& ctx) override {
    const ParamSet& p = params();
    std::filesystem::path text = p.string("text");
    if (text.is_relative() && !ctx.base_dir.empty()) text = std::filesystem::path(ctx.base_dir) / text;
    const std::string bos = p.string("bos");
    std::vector<int32_t> ids = ctx.tokenizer.encode(read_all(text.string()), bos == "stream");

    PerplexityOptions opt;
    opt.ctx = p.integer("ctx");
    opt.max_windows = p.integer("max_windows");
    opt.progress = ctx.progress;
    if (bos == "window") {
      if (!ctx.tokenizer.bos_id()) fail("task ppl: bos=window but the tokenizer of {} has no BOS", ctx.model_dir);
      opt.bos_id = *ctx.tokenizer.bos_id();
    }
    const auto path = p.string("path") == "stream" ? PerplexityPath::Stream : PerplexityPath::Fast;
    auto q = evaluate_quantized_perplexity(ctx.model, ids, opt, ctx.plan, path);
    if (q.quantized.windows == 0)
      fail("task ppl: '{}' holds {} tokens, fewer than one window of ctx={}", text.string(), ids.size(), opt.ctx);

    TaskResult r;
    r.metrics = {{"ppl", q.quantized.ppl()},        {"ppl_fp16", q.reference.ppl()},
                 {"kl_mean", q.kl_mean},            {"kl_p99", q.kl_p99},
                 {"top1_agreement", q.top1_agreement}, {"delta_p_correct", q.delta_p_correct}};
    r.bits_k = q.bits_k();
    r.bits_v = q.bits_v();
    r.cache_bytes = q.bytes.total();
    r.memory_ratio = q.memory_ratio();
    r.seconds = q.quantized.seconds;
    r.extra = {{"windows", q.quantized.windows}, {"predicted_tokens", q.quantized.predicted},
               {"text", text.string()}};
    return r;
  }
};

}  // namespace

TaskInfo perplexity_task_info() {
  return {"ppl",
          "perplexity over non-overlapping windows, with KL / top-1 agreement against the full-precision cache",
          {ParamSpec::string("text", "", "text file (relative to the experiment file's folder)"),
           ParamSpec::integer("ctx", 2048, "window length L in tokens (BOS included when used)", 2),
           ParamSpec::integer("max_windows", -1, "evaluate at most this many windows (<= 0: all)"),
           ParamSpec::string("bos", "stream", "stream: special tokens once at the start; window: BOS per window; none",
                             {"stream", "window", "none"}),
           ParamSpec::string("path", "fast", "fast: one masked pass per window; stream: token by token",
                             {"fast", "stream"})},
          [](const ParamSet& p) {
            if (p.string("text").empty()) fail("task ppl: parameter 'text' is required (a text file)");
            return std::make_unique<PerplexityTask>(p);
          },
          [](const ParamSet& p, const ModelConfig& c, const std::string& base_dir) {
            std::filesystem::path text = p.string("text");
            if (text.is_relative() && !base_dir.empty()) text = std::filesystem::path(base_dir) / text;
            if (!std::filesystem::is_regular_file(text)) fail("task ppl: parameter 'text': file '{}' not found", text.string());
            if (p.integer("ctx") > c.max_position_embeddings)
              fail("task ppl: parameter 'ctx' = {} exceeds the model's max_position_embeddings {}", p.integer("ctx"),
                   c.max_position_embeddings);
          }};
}

}  // namespace kvlab
