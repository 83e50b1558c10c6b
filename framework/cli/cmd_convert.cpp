// kvlab convert llama2c: a llama2.c checkpoint + tokenizer -> HF-format directory.
#include <fmt/format.h>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/model/llama2c_import.h"

namespace kvlab::cli {

int convert(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("usage: kvlab convert llama2c --model FILE.bin --tokenizer FILE.bin --out DIR\n");
    return args.empty() ? 2 : 0;
  }
  if (args[0] != "llama2c") fail("unknown source format '{}' (valid: llama2c)", args[0]);
  po::options_description desc("convert llama2c options");
  desc.add_options()
    ("model", po::value<std::string>()->required(), "llama2.c model file (legacy export, e.g. stories260K.bin)")
    ("tokenizer", po::value<std::string>()->required(), "llama2.c tokenizer file (e.g. tok512.bin)")
    ("out", po::value<std::string>()->required(), "output checkpoint directory");
  auto vm = parse(Args(args.begin() + 1, args.end()), desc,
                  "kvlab convert llama2c --model FILE.bin --tokenizer FILE.bin --out DIR");
  if (!vm) return 0;
  const std::string out = (*vm)["out"].as<std::string>();
  ModelConfig c = convert_llama2c((*vm)["model"].as<std::string>(), (*vm)["tokenizer"].as<std::string>(), out);
  fmt::print("wrote {}: llama, {} layers, dim {}, hidden {}, heads {}/{} (q/kv), vocab {}, max positions {}, "
             "{} classifier, {:.3f}M parameters\n",
             out, c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
             c.num_key_value_heads, c.vocab_size, c.max_position_embeddings,
             c.tie_word_embeddings ? "shared" : "separate", c.parameter_count() / 1e6);
  return 0;
}

}  // namespace kvlab::cli
