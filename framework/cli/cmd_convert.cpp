// kvlab convert llama2c|gguf: a llama2.c checkpoint + tokenizer, or a GGUF file -> HF-format directory.
#include <fmt/format.h>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/model/dtype.h"
#include "kvlab/model/gguf_model.h"
#include "kvlab/model/llama2c_import.h"

namespace kvlab::cli {

namespace {

int convert_gguf_command(const Args& args) {
  po::options_description desc("convert gguf options");
  desc.add_options()
    ("model", po::value<std::string>()->required(), "GGUF file (architecture llama or qwen2)")
    ("out", po::value<std::string>()->required(), "output checkpoint directory")
    ("dtype", po::value<std::string>()->default_value("float32"), "weights' dtype: float32 | bfloat16 | float16")
    ("threads", po::value<int>()->default_value(0), "CPU threads for dequantization (0: all cores)");
  auto vm = parse(args, desc, "kvlab convert gguf --model FILE.gguf --out DIR [--dtype float32|bfloat16|float16]");
  if (!vm) return 0;
  set_threads((*vm)["threads"].as<int>());
  const std::string out = (*vm)["out"].as<std::string>();
  const ModelConfig c = convert_gguf((*vm)["model"].as<std::string>(), out, parse_dtype((*vm)["dtype"].as<std::string>()));
  fmt::print("wrote {}: {}, {} layers, hidden {}, intermediate {}, heads {}/{} (q/kv), head_dim {}, vocab {}, "
             "max positions {}, {} embeddings, {:.1f}M parameters, {}\n",
             out, c.model_type, c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
             c.num_key_value_heads, c.head_dim, c.vocab_size, c.max_position_embeddings,
             c.tie_word_embeddings ? "tied" : "separate", c.parameter_count() / 1e6, c.torch_dtype);
  return 0;
}

}  // namespace

int convert(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("usage: kvlab convert llama2c --model FILE.bin --tokenizer FILE.bin --out DIR\n"
               "       kvlab convert gguf --model FILE.gguf --out DIR [--dtype float32|bfloat16|float16]\n");
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "gguf") return convert_gguf_command(Args(args.begin() + 1, args.end()));
  if (args[0] != "llama2c") fail("unknown source format '{}' (valid: llama2c, gguf)", args[0]);
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
