// kvlab eval ppl: perplexity over non-overlapping windows (see kvlab/eval/perplexity.h).
#include <fmt/format.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/perplexity.h"
#include "kvlab/eval/quantized_perplexity.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/model/dtype.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::cli {
namespace {


int eval_ppl(const Args& args) {
  po::options_description desc("eval ppl options");
  add_model_options(desc);
  desc.add_options()
    ("text", po::value<std::string>()->required(), "text file, tokenized once as a whole")
    ("ctx", po::value<int64_t>()->default_value(2048), "window length L in tokens")
    ("max-windows", po::value<int64_t>()->default_value(-1), "evaluate at most this many windows")
    ("bos", po::value<std::string>()->default_value("stream"),
     "stream: the tokenizer's own special tokens once, at the start of the text (HF style); "
     "window: BOS at the start of every window; none: no BOS")
    ("path", po::value<std::string>()->default_value("fast"),
     "fast: one masked pass per window; stream: feed tokens one at a time (the definition; slow)")
    ("json", "print the result as one JSON object on stdout");
  add_method_options(desc);  // --method adds KL to the full-precision cache, bits, memory
  auto vm = parse(args, desc, "kvlab eval ppl --model DIR --text FILE [--ctx L]");
  if (!vm) return 0;

  const std::string model_dir = (*vm)["model"].as<std::string>();
  const std::string text_path = (*vm)["text"].as<std::string>();
  const std::string bos_mode = (*vm)["bos"].as<std::string>();
  if (bos_mode != "stream" && bos_mode != "window" && bos_mode != "none")
    fail("--bos '{}' is not one of stream, window, none", bos_mode);

  auto tok = load_tokenizer(model_dir);
  LlamaModel model = load_model_from_options(*vm);
  const std::string text = read_text_file(text_path);
  std::vector<int32_t> ids = tok->encode(text, bos_mode == "stream");

  PerplexityOptions opt;
  opt.ctx = (*vm)["ctx"].as<int64_t>();
  opt.max_windows = (*vm)["max-windows"].as<int64_t>();
  if (bos_mode == "window") {
    if (!tok->bos_id()) fail("--bos window: the tokenizer of {} has no BOS token", model_dir);
    opt.bos_id = *tok->bos_id();
  }
  if (auto method = method_from_options(*vm)) {
    const std::string name = (*vm)["method"].as<std::string>();
    const std::string path = (*vm)["path"].as<std::string>();
    if (path != "fast" && path != "stream") fail("--path '{}' is not fast or stream", path);
    method->calibrate(model);
    const CachePlan plan = method->plan(model.config());
    auto q = evaluate_quantized_perplexity(model, ids, opt, plan,
                                           path == "fast" ? PerplexityPath::Fast : PerplexityPath::Stream);
    nlohmann::json j = {{"model", model_dir}, {"text", text_path}, {"ctx", opt.ctx}, {"bos", bos_mode},
                        {"dtype", dtype_name(model.dtype())}, {"device", model.device().str()},
                        {"method", name}, {"params", method->params().to_json()},
                        {"path", path}, {"windows", q.quantized.windows},
                        {"predicted_tokens", q.quantized.predicted}, {"ppl_fp16", q.reference.ppl()},
                        {"ppl", q.quantized.ppl()}, {"kl_mean", q.kl_mean}, {"kl_p99", q.kl_p99},
                        {"top1_agreement", q.top1_agreement}, {"delta_p_correct", q.delta_p_correct},
                        {"bits_k", q.bits_k()}, {"bits_v", q.bits_v()}, {"memory_ratio", q.memory_ratio()},
                        {"cache_bytes", q.bytes.total()}, {"seconds", q.quantized.seconds}};
    if (vm->count("json")) {
      std::cout << j.dump() << "\n";
    } else {
      fmt::print("method {} ({})\n", name, method->params().slug());
      fmt::print("  perplexity {:.4f} (fp16 {:.4f})  KL mean {:.5f} p99 {:.5f}  top-1 same {:.2f}%  "
                 "dp(correct) {:+.5f}\n",
                 q.quantized.ppl(), q.reference.ppl(), q.kl_mean, q.kl_p99, 100 * q.top1_agreement,
                 q.delta_p_correct);
      fmt::print("  K {:.3f} bits  V {:.3f} bits  memory {:.4f} of a 16-bit cache ({} bytes for {} tokens)\n",
                 q.bits_k(), q.bits_v(), q.memory_ratio(), q.bytes.total(), opt.ctx);
    }
    return 0;
  }
  PerplexityResult r = evaluate_perplexity(model, ids, opt);

  nlohmann::json j = {{"model", model_dir}, {"text", text_path}, {"ctx", opt.ctx}, {"bos", bos_mode},
                      {"dtype", dtype_name(model.dtype())}, {"device", model.device().str()},
                      {"method", "fp16"}, {"windows", r.windows}, {"predicted_tokens", r.predicted},
                      {"mean_nll", r.mean_nll()}, {"ppl", r.ppl()}, {"seconds", r.seconds},
                      {"tokens_per_second", r.tokens_per_second()}};
  if (vm->count("json")) {
    std::cout << j.dump() << "\n";
  } else {
    fmt::print("perplexity {:.4f}  (mean NLL {:.5f} over {} tokens in {} windows of {}; {:.1f} tok/s)\n", r.ppl(),
               r.mean_nll(), r.predicted, r.windows, opt.ctx, r.tokens_per_second());
  }
  return 0;
}

}  // namespace

int eval(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("usage: kvlab eval <task> [options]\n\ntasks:\n  ppl        perplexity over non-overlapping windows\n"
               "  longbench  LongBench v1 generation, scored as the benchmark\n"
               "  passkey    pass key retrieval over context lengths and depths\n"
               "  needle     needle in a haystack over context lengths and depths\n");
    return args.empty() ? 2 : 0;
  }
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "ppl") return eval_ppl(rest);
  if (args[0] == "longbench") return eval_longbench(rest);
  if (args[0] == "passkey") return eval_synthetic(rest, SyntheticKind::Passkey);
  if (args[0] == "needle") return eval_synthetic(rest, SyntheticKind::Needle);
  fail("unknown eval task '{}' (valid: ppl, longbench, passkey, needle)", args[0]);
}

}  // namespace kvlab::cli
