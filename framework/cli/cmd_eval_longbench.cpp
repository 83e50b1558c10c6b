// kvlab eval longbench | passkey | needle: generation under a KV-cache method, scored by exact
// benchmark rules (kvlab/eval/longbench/evaluate.h, kvlab/eval/passkey.h).
#include <fmt/format.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/evaluate.h"
#include "kvlab/eval/passkey.h"
#include "kvlab/eval/stop_tokens.h"
#include "kvlab/model/dtype.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::cli {
namespace {

std::unique_ptr<KvMethod> calibrated_method(const po::variables_map& vm, LlamaModel& model) {
  auto method = method_from_options(vm);
  method->calibrate(model);
  return method;
}

template <typename T>
std::vector<T> comma_list(const std::string& text, const std::string& option) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::istringstream is(item);
    T v;
    if (!(is >> v) || !(is >> std::ws).eof()) fail("--{}: '{}' is not a number", option, item);
    out.push_back(v);
  }
  if (out.empty()) fail("--{}: empty list", option);
  return out;
}

// An integer flag's value, refused below `min` naming the flag.
int64_t at_least(const po::variables_map& vm, const std::string& flag, int64_t min) {
  const int64_t v = vm[flag].as<int64_t>();
  if (v < min) fail("--{} {}: must be at least {}", flag, v, min);
  return v;
}

std::string bucket_text(double v) { return std::isnan(v) ? "-" : fmt::format("{:.2f}", v); }

}  // namespace

int eval_longbench(const Args& args) {
  po::options_description desc("eval longbench options");
  add_model_options(desc);
  add_method_options(desc, "fp16");
  desc.add_options()
    ("data", po::value<std::string>()->required(), "directory of the benchmark's <task>.jsonl files")
    ("tasks", po::value<std::string>()->default_value("all"), "all (16 English/code tasks), e (LongBench-E's 13) or a,b,c")
    ("e", "LongBench-E: read <task>_e.jsonl, report 0-4k / 4-8k / 8k+ buckets")
    ("max-samples", po::value<int64_t>()->default_value(-1), "the first N records of each task (<= 0: all)")
    ("max-length", po::value<int64_t>()->default_value(0),
     "prompt budget in tokens, cut in the middle beyond it (0: model context minus the task's generation length; "
     "LongBench uses 3500 for 4k models)")
    ("chat-template", po::value<std::string>()->default_value("auto"), "auto | none | llama2 | llama3 | mistral | qwen2")
    ("batch", po::value<int64_t>()->default_value(1), "prompts of equal token length generated together")
    ("max-new", po::value<int64_t>()->default_value(0), "generation length (0: the benchmark's per task)")
    ("out", po::value<std::string>(), "write <task>.jsonl predictions here (kvlab longbench score reads them)")
    ("json", "print the result as one JSON object on stdout");
  auto vm = parse(args, desc, "kvlab eval longbench --model DIR --data DIR [--tasks all] [--method NAME --set k=v]");
  if (!vm) return 0;

  const std::string model_dir = (*vm)["model"].as<std::string>();
  at_least(*vm, "max-length", 0);
  at_least(*vm, "max-new", 0);
  at_least(*vm, "batch", 1);
  longbench::EvalOptions opt;
  opt.data_dir = (*vm)["data"].as<std::string>();
  opt.tasks = longbench::expand_task_list((*vm)["tasks"].as<std::string>());
  opt.longbench_e = vm->count("e") > 0;
  opt.max_samples = (*vm)["max-samples"].as<int64_t>() > 0 ? (*vm)["max-samples"].as<int64_t>() : -1;
  opt.max_length = (*vm)["max-length"].as<int64_t>();
  opt.chat = longbench::resolve_chat_style((*vm)["chat-template"].as<std::string>(), model_dir);
  opt.chat_system = longbench::resolve_chat_system((*vm)["chat-template"].as<std::string>(), model_dir);
  opt.batch = (*vm)["batch"].as<int64_t>();
  opt.max_new_tokens = (*vm)["max-new"].as<int64_t>();
  if (vm->count("out")) opt.out_dir = (*vm)["out"].as<std::string>();

  auto tok = load_tokenizer(model_dir);
  LlamaModel model = load_model_from_options(*vm);
  auto method = calibrated_method(*vm, model);
  const CachePlan plan = method->plan(model.config());
  opt.stop_ids = stop_token_ids(model_dir, model.config(), *tok);
  const longbench::EvalResult r = longbench::evaluate_longbench(model, *tok, plan, opt);

  nlohmann::json tasks = nlohmann::json::object();
  for (const auto& t : r.tasks) {
    nlohmann::json j = {{"score", t.score.score},         {"records", t.score.records},
                        {"truncated", t.truncated},        {"max_length", t.max_length},
                        {"max_new_tokens", t.max_new_tokens}, {"prompt_tokens", t.prompt_tokens},
                        {"generated_tokens", t.generated_tokens}};
    if (opt.longbench_e)
      for (size_t b = 0; b < 3; ++b)
        j["e"][longbench::kLengthBuckets[b]] =
            std::isnan(t.score.buckets[b]) ? nlohmann::json(nullptr) : nlohmann::json(t.score.buckets[b]);
    tasks[t.score.task] = j;
  }
  const nlohmann::json out = {{"model", model_dir}, {"data", opt.data_dir}, {"dtype", dtype_name(model.dtype())},
                              {"device", model.device().str()}, {"method", plan.method},
                              {"params", method->params().to_json()},
                              {"chat_template", longbench::chat_style_name(opt.chat)}, {"tasks", tasks},
                              {"average", r.average}, {"bits_k", r.bits_k()}, {"bits_v", r.bits_v()},
                              {"memory_ratio", r.memory_ratio()}, {"max_cache_bytes", r.max_cache_bytes},
                              {"seconds", r.seconds}};
  if (vm->count("json")) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  fmt::print("LongBench{} with method {} ({}), chat template {}\n", opt.longbench_e ? "-E" : "", plan.method,
             method->params().slug(), longbench::chat_style_name(opt.chat));
  fmt::print("  {:<22} {:>7} {:>9} {:>8}{}\n", "task", "records", "truncated", "score",
             opt.longbench_e ? "     0-4k     4-8k      8k+" : "");
  for (const auto& t : r.tasks) {
    std::string e;
    if (opt.longbench_e)
      for (double b : t.score.buckets) e += fmt::format(" {:>8}", bucket_text(b));
    fmt::print("  {:<22} {:>7} {:>9} {:>8.2f}{}\n", t.score.task, t.score.records, t.truncated, t.score.score, e);
  }
  fmt::print("  {:<22} {:>7} {:>9} {:>8.2f}\n", "average", "", "", r.average);
  fmt::print("  K {:.3f} bits  V {:.3f} bits  memory {:.4f} of a 16-bit cache (largest cache {} bytes)\n", r.bits_k(),
             r.bits_v(), r.memory_ratio(), r.max_cache_bytes);
  if (!opt.out_dir.empty()) fmt::print("  predictions in {}\n", opt.out_dir);
  return 0;
}

int eval_synthetic(const Args& args, SyntheticKind kind) {
  const std::string name = synthetic_kind_name(kind);
  po::options_description desc("eval " + name + " options");
  add_model_options(desc);
  add_method_options(desc, "fp16");
  desc.add_options()
    ("lengths", po::value<std::string>()->default_value("1024"), "context lengths in tokens, comma-separated")
    ("depths", po::value<std::string>()->default_value("0,0.25,0.5,0.75,1"), "needle depths in [0, 1], comma-separated")
    ("samples", po::value<int64_t>()->default_value(8), "prompts per (length, depth)")
    ("seed", po::value<uint64_t>()->default_value(0), "seed of keys, positions and haystack offsets")
    ("digits", po::value<int64_t>()->default_value(5), "digits of the pass key (needle: + 2)")
    ("batch", po::value<int64_t>()->default_value(8), "prompts generated together")
    ("max-new", po::value<int64_t>()->default_value(16), "greedy generation length")
    ("json", "print one JSON object per (length, depth) on stdout");
  if (kind == SyntheticKind::Needle)
    desc.add_options()("haystack", po::value<std::string>(), "haystack text file (default: built-in prose)");
  auto vm = parse(args, desc, "kvlab eval " + name + " --model DIR [--lengths 512,1024] [--depths 0,0.5,1] [--method NAME]");
  if (!vm) return 0;

  const std::string model_dir = (*vm)["model"].as<std::string>();
  at_least(*vm, "samples", 1);
  at_least(*vm, "batch", 1);
  at_least(*vm, "max-new", 1);
  at_least(*vm, "digits", 1);
  const auto lengths = comma_list<int64_t>((*vm)["lengths"].as<std::string>(), "lengths");
  const auto depths = comma_list<double>((*vm)["depths"].as<std::string>(), "depths");
  auto tok = load_tokenizer(model_dir);
  LlamaModel model = load_model_from_options(*vm);
  auto method = calibrated_method(*vm, model);
  const CachePlan plan = method->plan(model.config());

  SyntheticEvalOptions opt;
  opt.kind = kind;
  opt.samples = (*vm)["samples"].as<int64_t>();
  opt.batch = (*vm)["batch"].as<int64_t>();
  opt.max_new_tokens = (*vm)["max-new"].as<int64_t>();
  opt.stop_ids = stop_token_ids(model_dir, model.config(), *tok);
  opt.sample.seed = (*vm)["seed"].as<uint64_t>();
  opt.sample.digits = (*vm)["digits"].as<int64_t>();
  if (kind == SyntheticKind::Needle && vm->count("haystack"))
    opt.sample.haystack = read_text_file((*vm)["haystack"].as<std::string>());

  const bool json = vm->count("json") > 0;
  if (!json)
    fmt::print("{} retrieval with method {} ({}), {} samples each\n  {:>7} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8}\n", name,
               plan.method, method->params().slug(), opt.samples, "length", "depth", "realised", "accuracy",
               "K bits", "V bits", "memory");
  for (int64_t length : lengths) {
    for (double depth : depths) {
      opt.sample.context_length = length;
      opt.sample.depth = depth;
      const SyntheticEvalResult r = evaluate_synthetic(model, *tok, plan, opt);
      if (json) {
        std::cout << nlohmann::json{{"task", name}, {"model", model_dir}, {"method", plan.method},
                                    {"params", method->params().to_json()}, {"context_length", length},
                                    {"depth", depth}, {"realised_depth", r.mean_depth}, {"samples", r.samples},
                                    {"seed", opt.sample.seed}, {"accuracy", r.accuracy()}, {"bits_k", r.bits_k()},
                                    {"bits_v", r.bits_v()}, {"memory_ratio", r.memory_ratio()},
                                    {"predictions", r.predictions}, {"answers", r.answers}}
                         .dump()
                  << "\n";
      } else {
        fmt::print("  {:>7} {:>6.2f} {:>9.3f} {:>9.3f} {:>7.3f} {:>7.3f} {:>8.4f}\n", length, depth, r.mean_depth,
                   r.accuracy(), r.bits_k(), r.bits_v(), r.memory_ratio());
      }
    }
  }
  return 0;
}

}  // namespace kvlab::cli
