// kvlab generate: greedy decoding from a prompt through any method's cache (the full-precision one
// by default), with prefill and decode tokens/s, the cache's bytes at the end and the peak memory.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/common/process_usage.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/longbench/prompt.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::cli {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// The prompt as one user turn of the checkpoint's chat template (tokenizer_config.json's, or a GGUF
// file's tokenizer.chat_template), with the family's default system turn where it has one.
std::string chat_prompt(const std::string& model_path, const std::string& prompt) {
  const auto style = longbench::detect_chat_style(model_path);
  if (style == longbench::ChatStyle::None)
    fail("{}: --chat: the checkpoint has no chat template of a known family (llama2, llama3, mistral, ChatML)",
         model_path);
  return longbench::apply_chat_template(style, prompt, longbench::resolve_chat_system("auto", model_path));
}

}  // namespace

int generate(const Args& args) {
  po::options_description desc("generate options");
  add_model_options(desc);
  add_method_options(desc);
  desc.add_options()
    ("prompt", po::value<std::string>()->default_value(""), "prompt text (empty: start from BOS)")
    ("chat", "send the prompt as one user turn through the checkpoint's chat template (see kvlab eval longbench)")
    ("max-new", po::value<int64_t>()->default_value(64), "tokens to generate")
    ("batch", po::value<int64_t>()->default_value(1), "copies of the prompt decoded together")
    ("no-special", "do not add the tokenizer's special tokens (BOS) to the prompt")
    ("ignore-eos", "keep generating after EOS")
    ("ids", "also print the generated token ids");
  auto vm = parse(args, desc,
                  "kvlab generate --model DIR|FILE.gguf [--prompt TEXT] [--max-new N] [--method NAME --set k=v ...] "
                  "[--batch N] [--chat]");
  if (!vm) return 0;

  const std::string model_dir = (*vm)["model"].as<std::string>();
  auto method = method_from_options(*vm);  // an unknown method or parameter fails before the model loads
  const int64_t batch = (*vm)["batch"].as<int64_t>();
  if (batch < 1) fail("--batch must be >= 1, got {}", batch);
  const int64_t max_new = (*vm)["max-new"].as<int64_t>();
  if (max_new < 1) fail("--max-new must be >= 1, got {}", max_new);

  LlamaModel model = load_model_from_options(*vm);
  auto tok = load_tokenizer(model_dir);
  std::string prompt = (*vm)["prompt"].as<std::string>();
  if (vm->count("chat")) prompt = chat_prompt(model_dir, prompt);
  std::vector<int32_t> ids = tok->encode(prompt, !vm->count("no-special"));
  if (ids.empty()) {
    if (!tok->bos_id()) fail("empty prompt and the tokenizer has no BOS token to start from");
    ids.push_back(*tok->bos_id());
  }
  std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(batch), std::vector<int64_t>(ids.begin(), ids.end()));

  GenerateOptions opt;
  opt.max_new_tokens = max_new;
  if (!vm->count("ignore-eos")) {
    opt.stop_ids = model.config().eos_token_ids;
    if (tok->eos_id()) opt.stop_ids.push_back(*tok->eos_id());
  }
  std::string method_name = "fp16";
  KvCache cache = model.make_full_precision_cache();
  if (method) {
    method_name = (*vm)["method"].as<std::string>();
    method->calibrate(model);
    const CachePlan plan = method->plan(model.config());
    plan.validate(model.config().num_hidden_layers, model.config().head_dim);
    cache = make_cache(plan, multi_token_mode(plan.prefill));
  }
  GenerateResult r = greedy_generate(model, cache, prompts, opt);
  const int64_t peak = peak_rss_bytes();

  const auto& out = r.tokens.front();
  const bool decodable = std::all_of(out.begin(), out.end(), [&](int64_t id) { return id >= 0 && id < tok->vocab_size(); });
  if (decodable) {
    std::vector<int32_t> all(ids.begin(), ids.end());
    all.insert(all.end(), out.begin(), out.end());
    fmt::print("{}\n", tok->decode(all, /*skip_special=*/true));
  } else {  // a random-weight checkpoint's vocabulary is larger than its small tokenizer
    fmt::print(stderr, "note: generated ids beyond the tokenizer's {} pieces (random weights?): printing ids\n",
               tok->vocab_size());
  }
  if (vm->count("ids") || !decodable) fmt::print("ids: {}\n", fmt::join(out, " "));

  const auto P = static_cast<int64_t>(ids.size());
  fmt::print(stderr, "prompt {} x {} tokens in {:.3f} s ({:.1f} tok/s); decode {} x {} tokens in {:.3f} s ({:.1f} tok/s)\n",
             batch, P, r.prefill_seconds, r.prefill_seconds > 0 ? batch * P / r.prefill_seconds : 0.0, batch,
             r.decode_steps, r.decode_seconds, r.decode_tokens_per_second());
  // The cache as it stands: prompt + every token fed back (the last generated one is not).
  const ModelConfig& c = model.config();
  const CacheBytes bytes = cache.bytes();
  const double elements = static_cast<double>(batch) * cache.length() * c.num_hidden_layers * c.num_key_value_heads *
                          c.head_dim;
  fmt::print(stderr, "cache {} ({}): {} tokens x {} sequences, {:.2f} MiB; K {:.3f} bits, V {:.3f} bits; "
             "{:.4f} of a 16-bit cache\n",
             method_name, method ? method->params().slug() : "model dtype", cache.length(), batch, bytes.total() / kMiB,
             8.0 * bytes.keys.total() / elements, 8.0 * bytes.values.total() / elements,
             bytes.total() / (4.0 * elements));
  fmt::print(stderr, "memory: peak resident {:.1f} MiB (weights {:.1f} MiB, cache {:.1f} MiB)\n", peak / kMiB,
             model.weight_bytes() / kMiB, bytes.total() / kMiB);
  return 0;
}

}  // namespace kvlab::cli
