// kvlab make-model: a complete HF-format checkpoint (config.json, model.safetensors,
// tokenizer.model) with random weights, for a named shape or explicit dimensions. Random weights
// run at the same speed and use the same memory as trained ones: benchmarks and plumbing tests.
#include <fmt/format.h>

#include <filesystem>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/model/dtype.h"
#include "kvlab/model/random_checkpoint.h"

namespace kvlab::cli {
namespace {

RopeScaling parse_rope_scaling_flag(const std::string& spec) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= spec.size(); ++i)
    if (i == spec.size() || spec[i] == ':') parts.push_back(spec.substr(start, i - start)), start = i + 1;
  auto num = [&](size_t i) {
    try {
      return std::stod(parts.at(i));
    } catch (const std::exception&) {
      fail("--rope-scaling '{}': field {} is not a number", spec, i + 1);
    }
  };
  RopeScaling rs;
  if (parts[0] == "none" && parts.size() == 1) return rs;
  if (parts[0] == "linear" && parts.size() == 2) {
    rs.type = RopeScaling::Type::Linear;
    rs.factor = num(1);
    return rs;
  }
  if (parts[0] == "llama3" && parts.size() == 5) {
    rs.type = RopeScaling::Type::Llama3;
    rs.factor = num(1), rs.low_freq_factor = num(2), rs.high_freq_factor = num(3);
    rs.original_max_position_embeddings = static_cast<int64_t>(num(4));
    return rs;
  }
  fail("--rope-scaling '{}' is not none, linear:FACTOR or llama3:FACTOR:LOW:HIGH:ORIGINAL_MAX_POSITIONS", spec);
}

}  // namespace

int make_model(const Args& args) {
  po::options_description desc("make-model options");
  std::string shapes;
  for (const auto& n : ModelConfig::shape_names()) shapes += (shapes.empty() ? "" : ", ") + n;
  desc.add_options()
    ("out", po::value<std::string>()->required(), "output checkpoint directory (new or empty)")
    ("force", "write into a non-empty --out (files of the same names are replaced, others stay)")
    ("shape", po::value<std::string>()->default_value("tiny"), ("named shape: " + shapes).c_str())
    ("random", "random weights (normal, std 0.02); the only initialisation, accepted for clarity")
    ("seed", po::value<uint64_t>()->default_value(0), "random seed")
    ("init-std", po::value<double>()->default_value(0.02), "standard deviation of the random weights")
    ("dtype", po::value<std::string>()->default_value("float32"), "weights' dtype: float32 | bfloat16 | float16")
    ("model-type", po::value<std::string>(), "override: llama | mistral | qwen2")
    ("layers", po::value<int64_t>(), "override num_hidden_layers")
    ("hidden", po::value<int64_t>(), "override hidden_size")
    ("intermediate", po::value<int64_t>(), "override intermediate_size")
    ("heads", po::value<int64_t>(), "override num_attention_heads")
    ("kv-heads", po::value<int64_t>(), "override num_key_value_heads")
    ("head-dim", po::value<int64_t>(), "override head_dim")
    ("vocab", po::value<int64_t>(), "override vocab_size")
    ("max-positions", po::value<int64_t>(), "override max_position_embeddings")
    ("tie-embeddings", po::value<bool>(), "override tie_word_embeddings (true/false)")
    ("rope-theta", po::value<double>(), "override rope_theta")
    ("rope-scaling", po::value<std::string>(),
     "override rope_scaling: none | linear:FACTOR | llama3:FACTOR:LOW:HIGH:ORIGINAL_MAX_POSITIONS")
    ("tokenizer-text", po::value<std::string>()->default_value(KVLAB_SOURCE_DIR "/datasets/tiny/tokenizer_corpus.txt"),
     "text the SentencePiece tokenizer is trained on")
    ("tokenizer-vocab", po::value<int>()->default_value(512), "tokenizer vocabulary size (<= model vocab)");
  auto vm = parse(args, desc, "kvlab make-model --out DIR [--shape tiny] [overrides]");
  if (!vm) return 0;

  ModelConfig c = ModelConfig::named_shape((*vm)["shape"].as<std::string>());
  if (vm->count("model-type")) {
    c.model_type = (*vm)["model-type"].as<std::string>();
    if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2")
      fail("--model-type '{}' is not one of llama, mistral, qwen2", c.model_type);
    c.attention_bias = c.model_type == "qwen2";
  }
  auto over = [&](const char* key, int64_t& field) { if (vm->count(key)) field = (*vm)[key].as<int64_t>(); };
  over("layers", c.num_hidden_layers);
  over("hidden", c.hidden_size);
  over("intermediate", c.intermediate_size);
  over("heads", c.num_attention_heads);
  over("kv-heads", c.num_key_value_heads);
  over("vocab", c.vocab_size);
  over("max-positions", c.max_position_embeddings);
  if (vm->count("head-dim")) c.head_dim = (*vm)["head-dim"].as<int64_t>();
  else if (vm->count("hidden") || vm->count("heads")) c.head_dim = c.hidden_size / std::max<int64_t>(1, c.num_attention_heads);
  if (vm->count("tie-embeddings")) c.tie_word_embeddings = (*vm)["tie-embeddings"].as<bool>();
  if (vm->count("rope-theta")) c.rope_theta = (*vm)["rope-theta"].as<double>();
  if (vm->count("rope-scaling")) c.rope_scaling = parse_rope_scaling_flag((*vm)["rope-scaling"].as<std::string>());
  c.validate("make-model options");

  const std::string out = (*vm)["out"].as<std::string>();
  // Never replace another checkpoint by accident: its README or training log would stay behind,
  // describing a model that is no longer there.
  if (std::filesystem::exists(out)) {
    if (!std::filesystem::is_directory(out)) fail("--out {}: exists and is not a directory", out);
    if (!std::filesystem::is_empty(out) && !vm->count("force"))
      fail("--out {}: the folder is not empty (it may hold another checkpoint); choose a new folder, or pass --force "
           "to write into it", out);
  }
  RandomCheckpointOptions opt;
  opt.seed = (*vm)["seed"].as<uint64_t>();
  opt.init_std = (*vm)["init-std"].as<double>();
  opt.dtype = parse_dtype((*vm)["dtype"].as<std::string>());
  opt.tokenizer_text = (*vm)["tokenizer-text"].as<std::string>();
  opt.tokenizer_vocab = (*vm)["tokenizer-vocab"].as<int>();
  if (opt.tokenizer_vocab > c.vocab_size)
    fail("--tokenizer-vocab {} exceeds the model's vocab_size {}", opt.tokenizer_vocab, c.vocab_size);
  c = write_random_checkpoint(c, out, opt);
  const auto dtype = opt.dtype;
  const int tok_vocab = opt.tokenizer_vocab;
  fmt::print("wrote {}: {} {} layers, hidden {}, heads {}/{} (q/kv), head_dim {}, vocab {}, {:.2f}M parameters, "
             "{}; tokenizer {} pieces\n",
             out, c.model_type, c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
             c.num_key_value_heads, c.head_dim, c.vocab_size, c.parameter_count() / 1e6, dtype_name(dtype),
             tok_vocab);
  return 0;
}

}  // namespace kvlab::cli
