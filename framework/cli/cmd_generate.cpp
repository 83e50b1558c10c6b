// kvlab generate: greedy decoding from a prompt through the full-precision cache, with tokens/s.
#include <fmt/format.h>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/longbench/prompt.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::cli {

int generate(const Args& args) {
  po::options_description desc("generate options");
  add_model_options(desc);
  desc.add_options()
    ("prompt", po::value<std::string>()->default_value(""), "prompt text (empty: start from BOS)")
    ("chat", "send the prompt as one user turn through the checkpoint's chat template (see kvlab eval longbench)")
    ("max-new", po::value<int64_t>()->default_value(64), "tokens to generate")
    ("batch", po::value<int64_t>()->default_value(1), "copies of the prompt decoded together")
    ("no-special", "do not add the tokenizer's special tokens (BOS) to the prompt")
    ("ignore-eos", "keep generating after EOS")
    ("ids", "also print the generated token ids");
  auto vm = parse(args, desc, "kvlab generate --model DIR|FILE.gguf [--prompt TEXT] [--chat] [--max-new N]");
  if (!vm) return 0;

  LlamaModel model = load_model_from_options(*vm);
  const std::string model_path = (*vm)["model"].as<std::string>();
  auto tok = load_tokenizer(model_path);
  std::string prompt = (*vm)["prompt"].as<std::string>();
  if (vm->count("chat")) {
    const auto style = longbench::detect_chat_style(model_path);
    if (style == longbench::ChatStyle::None)
      fail("{}: --chat: the checkpoint has no chat template of a known family (llama2, llama3, mistral, ChatML)",
           model_path);
    prompt = longbench::apply_chat_template(style, prompt, longbench::resolve_chat_system("auto", model_path));
  }
  std::vector<int32_t> ids = tok->encode(prompt, !vm->count("no-special"));
  if (ids.empty()) {
    if (!tok->bos_id()) fail("empty prompt and the tokenizer has no BOS token to start from");
    ids.push_back(*tok->bos_id());
  }
  const int64_t batch = (*vm)["batch"].as<int64_t>();
  if (batch < 1) fail("--batch must be >= 1, got {}", batch);
  std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(batch), std::vector<int64_t>(ids.begin(), ids.end()));

  GenerateOptions opt;
  opt.max_new_tokens = (*vm)["max-new"].as<int64_t>();
  if (!vm->count("ignore-eos")) {
    opt.stop_ids = model.config().eos_token_ids;
    if (tok->eos_id()) opt.stop_ids.push_back(*tok->eos_id());
  }
  KvCache cache = model.make_full_precision_cache();
  GenerateResult r = greedy_generate(model, cache, prompts, opt);

  const auto& out = r.tokens.front();
  std::vector<int32_t> all(ids.begin(), ids.end());
  all.insert(all.end(), out.begin(), out.end());
  fmt::print("{}\n", tok->decode(all, /*skip_special=*/true));
  if (vm->count("ids")) fmt::print("ids: {}\n", fmt::join(out, " "));
  fmt::print(stderr, "prompt {} tokens in {:.3f} s ({:.1f} tok/s); decode {} x {} tokens in {:.3f} s ({:.1f} tok/s)\n",
             ids.size() * static_cast<size_t>(batch), r.prefill_seconds,
             r.prefill_seconds > 0 ? ids.size() * batch / r.prefill_seconds : 0.0, batch, r.decode_steps,
             r.decode_seconds, r.decode_tokens_per_second());
  return 0;
}

}  // namespace kvlab::cli
