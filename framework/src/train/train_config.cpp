#include "kvlab/train/train_config.h"

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/yaml_file.h"
#include "kvlab/common/strings.h"

namespace kvlab {
namespace {

std::vector<ParamSpec> model_specs() {
  return {ParamSpec::integer("hidden_size", 192, "model width", 8),
          ParamSpec::integer("intermediate_size", 512, "SwiGLU hidden width", 8),
          ParamSpec::integer("num_hidden_layers", 6, "decoder layers", 1),
          ParamSpec::integer("num_attention_heads", 6, "query heads", 1),
          ParamSpec::integer("num_key_value_heads", 2, "key/value heads (GQA when fewer than query heads)", 1),
          ParamSpec::integer("head_dim", 0, "per-head width (0: hidden_size / num_attention_heads)", 0),
          ParamSpec::integer("max_position_embeddings", 512, "longest sequence the model is meant for", 16),
          ParamSpec::real("rope_theta", 10000.0, "RoPE base", 1.0),
          ParamSpec::real("rms_norm_eps", 1e-5, "RMSNorm epsilon", 0.0),
          ParamSpec::boolean("tie_word_embeddings", false, "share the embedding and LM head")};
}

std::vector<ParamSpec> tokenizer_specs() {
  return {ParamSpec::integer("vocab_size", 2048, "SentencePiece BPE vocabulary (byte fallback needs >= 300)", 300, 65536)};
}

std::vector<ParamSpec> train_specs() {
  return {ParamSpec::integer("steps", 600, "optimizer steps", 1),
          ParamSpec::integer("batch_size", 16, "sequences per step", 1),
          ParamSpec::integer("seq_len", 256, "tokens per training sequence: BOS + seq_len - 1 text tokens, as eval ppl --bos window --ctx seq_len", 8),
          ParamSpec::real("lr", 3e-3, "peak learning rate", 0.0),
          ParamSpec::real("min_lr", 3e-4, "learning rate at the end of the cosine decay", 0.0),
          ParamSpec::integer("warmup_steps", 40, "linear warm-up steps", 0),
          ParamSpec::real("weight_decay", 0.1, "AdamW decoupled weight decay (matrices only)", 0.0),
          ParamSpec::real("beta1", 0.9, "AdamW beta1", 0.0, 1.0),
          ParamSpec::real("beta2", 0.95, "AdamW beta2", 0.0, 1.0),
          ParamSpec::real("grad_clip", 1.0, "clip the global gradient norm to this (0: off)", 0.0),
          ParamSpec::real("init_std", 0.02, "std of the normal initialisation", 0.0),
          ParamSpec::integer("seed", 0, "initialisation and data-order seed"),
          ParamSpec::integer("checkpoint_every", 50, "write a resumable checkpoint every N steps", 1),
          ParamSpec::integer("threads", 0, "CPU threads (0: all cores)", 0),
          ParamSpec::string("save_dtype", "float16", "dtype of the final weights", {"float16", "bfloat16", "float32"})};
}

std::vector<ParamSpec> eval_specs() {
  return {ParamSpec::integer("windows", 32, "test windows (of seq_len tokens) for the final perplexity", 1)};
}

std::string at_line(const std::string& source, const YAML::Node& n, const std::string& what) {
  return n.Mark().is_null() ? fmt::format("{} {}", source, what)
                            : fmt::format("{}:{} {}", source, n.Mark().line + 1, what);
}

}  // namespace

TrainConfig parse_train_config(const YAML::Node& root, const std::string& source) {
  if (!root.IsMap()) fail("{}: a train config is a YAML map with sections model, tokenizer, train, eval", source);
  const std::vector<std::string> sections = {"model", "tokenizer", "train", "eval"};
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(sections.begin(), sections.end(), key) == sections.end())
      fail("{}: unknown section '{}'{} (valid: {})", at_line(source, kv.first, ""), key, did_you_mean(key, sections),
           join(sections));
  }
  auto section = [&](const char* name) { return root[name] ? root[name] : YAML::Node(); };
  TrainConfig c;
  c.source = source;
  const ParamSet m = ParamSet::resolve(model_specs(), section("model"), at_line(source, section("model"), "model"));
  const ParamSet t = ParamSet::resolve(tokenizer_specs(), section("tokenizer"),
                                       at_line(source, section("tokenizer"), "tokenizer"));
  c.train = ParamSet::resolve(train_specs(), section("train"), at_line(source, section("train"), "train"));
  c.eval = ParamSet::resolve(eval_specs(), section("eval"), at_line(source, section("eval"), "eval"));
  c.tokenizer_vocab = static_cast<int>(t.integer("vocab_size"));

  ModelConfig& mc = c.model;
  mc.model_type = "llama";
  mc.hidden_size = m.integer("hidden_size");
  mc.intermediate_size = m.integer("intermediate_size");
  mc.num_hidden_layers = m.integer("num_hidden_layers");
  mc.num_attention_heads = m.integer("num_attention_heads");
  mc.num_key_value_heads = m.integer("num_key_value_heads");
  mc.head_dim = m.integer("head_dim") > 0 ? m.integer("head_dim") : mc.hidden_size / mc.num_attention_heads;
  mc.max_position_embeddings = m.integer("max_position_embeddings");
  mc.rope_theta = m.real("rope_theta");
  mc.rms_norm_eps = m.real("rms_norm_eps");
  mc.tie_word_embeddings = m.boolean("tie_word_embeddings");
  mc.vocab_size = c.tokenizer_vocab;
  mc.validate(source + " model");
  if (c.train.integer("seq_len") > mc.max_position_embeddings)
    fail("{}: train.seq_len {} exceeds model.max_position_embeddings {}", source, c.train.integer("seq_len"),
         mc.max_position_embeddings);
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  check_input_file(path, "train config", kMaxYamlFileBytes);
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("{}: cannot read the train config", path);
  } catch (const YAML::Exception& e) {
    fail("{}:{}: malformed YAML: {}", path, e.mark.line + 1, e.msg);
  } catch (const std::exception& e) {  // e.g. a directory: the stream fails with "Is a directory"
    fail("{}: cannot read the train config: {}", path, e.what());
  }
  refuse_duplicate_yaml_keys(path);
  return parse_train_config(root, path);
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json mj = model.to_json();
  return {{"model", mj}, {"tokenizer", {{"vocab_size", tokenizer_vocab}}}, {"train", train.to_json()},
          {"eval", eval.to_json()}};
}

}  // namespace kvlab
