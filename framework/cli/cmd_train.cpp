// kvlab train: a Llama-architecture model trained from scratch (kvlab/train/trainer.h).
#include <fmt/format.h>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/train/trainer.h"

namespace kvlab::cli {

int train(const Args& args) {
  po::options_description desc("train options");
  desc.add_options()
    ("config", po::value<std::string>()->required(), "model + schedule YAML (sections model, tokenizer, train, eval)")
    ("text", po::value<std::string>()->required(), "training text file")
    ("out", po::value<std::string>()->required(), "output checkpoint folder (re-run the same command to resume)")
    ("test", po::value<std::string>()->default_value(""), "held-out text: perplexity of the saved checkpoint")
    ("stop-after", po::value<int64_t>()->default_value(-1), "stop after this many steps (resumable); < 0: all")
    ("quiet", "no progress line");
  auto vm = parse(args, desc, "kvlab train --config MODEL.yaml --text FILE --out DIR [--test FILE]");
  if (!vm) return 0;
  const TrainConfig cfg = load_train_config((*vm)["config"].as<std::string>());
  TrainRun run;
  run.text = (*vm)["text"].as<std::string>();
  run.out = (*vm)["out"].as<std::string>();
  run.test = (*vm)["test"].as<std::string>();
  run.stop_after = (*vm)["stop-after"].as<int64_t>();
  run.progress = !vm->count("quiet");
  const TrainSummary s = train_model(cfg, run);
  fmt::print("{} {} steps ({} tokens, {:.2f}M parameters) in {:.0f} s; final train loss {:.4f}", run.out,
             s.steps_done, s.tokens_seen, s.parameters / 1e6, s.total_seconds, s.final_train_loss);
  if (s.test_ppl > 0) fmt::print("; test perplexity {:.3f} over {} tokens", s.test_ppl, s.test_tokens);
  fmt::print("{}\n", s.finished ? "" : " (stopped early; re-run to resume)");
  return 0;
}

}  // namespace kvlab::cli
