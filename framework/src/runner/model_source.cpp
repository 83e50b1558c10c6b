#include "kvlab/runner/model_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "kvlab/common/error.h"
#include "kvlab/common/sha256.h"
#include "kvlab/model/dtype.h"
#include "kvlab/model/gguf_model.h"
#include "kvlab/model/llama2c_import.h"
#include "kvlab/model/random_checkpoint.h"
#include "kvlab/runner/staging.h"

namespace kvlab {
namespace fs = std::filesystem;

namespace {

// Bump when a converter's output changes for the same input, so cached folders are rebuilt.
constexpr const char* kLlama2cConverterVersion = "1";
constexpr const char* kMakeVersion = "1";

ModelConfig config_from_llama2c(const std::string& model_path) {
  const Llama2cHeader h = read_llama2c_header(model_path);
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = h.dim;
  c.intermediate_size = h.hidden_dim;
  c.num_hidden_layers = h.n_layers;
  c.num_attention_heads = h.n_heads;
  c.num_key_value_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.vocab_size = h.vocab_size;
  c.max_position_embeddings = h.seq_len;
  c.tie_word_embeddings = h.shared_classifier;
  return c;
}

}  // namespace

std::string checkpoint_fingerprint(const std::string& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  Sha256 s;
  s.update("kvlab checkpoint\n");
  bool any_weights = false;
  for (const auto& f : files) {
    const std::string name = f.filename().string();
    const bool weights = f.extension() == ".safetensors" || f.extension() == ".bin";
    const bool small = name == "config.json" || name.rfind("tokenizer", 0) == 0 || name == "model.safetensors.index.json";
    if (!weights && !small) continue;
    any_weights |= f.extension() == ".safetensors";
    s.update(name + "\n" + file_fingerprint(f.string()) + "\n");
  }
  if (!fs::exists(fs::path(dir) / "config.json")) fail("{}: no config.json (not an HF checkpoint folder)", dir);
  if (!any_weights) fail("{}: no *.safetensors weights", dir);
  return s.hex();
}

std::string gguf_fingerprint(const std::string& path) {
  const GgufFile f(path);  // validates the whole header
  Sha256 s;
  s.update("kvlab gguf\n");
  s.update(f.header_bytes());
  s.update("\n" + file_fingerprint(path) + "\n");
  return s.hex();
}

ModelInfo inspect_model(const ModelEntry& e, bool allow_absent) {
  ModelInfo info;
  auto absent = [&](const std::string& what) {
    if (allow_absent && !e.shape.empty()) {
      info.present = false;
      info.config = ModelConfig::named_shape(e.shape);
      return;
    }
    fail("{}: model '{}': {} not found{}", e.where, e.name, what,
         allow_absent ? " (give the entry a 'shape' to dry-run without it)" : "");
  };
  switch (e.source) {
    case ModelEntry::Source::Path:
      if (is_gguf_path(e.path)) {
        info.config = gguf_model_config(GgufFile(e.path));
        info.fingerprint = gguf_fingerprint(e.path);
        return info;
      }
      if (!fs::exists(fs::path(e.path) / "config.json")) {
        absent(fmt::format("checkpoint '{}'", e.path));
        return info;
      }
      info.config = ModelConfig::from_dir(e.path);
      info.fingerprint = checkpoint_fingerprint(e.path);
      return info;
    case ModelEntry::Source::Llama2c: {
      for (const auto& f : {e.llama2c_model, e.llama2c_tokenizer})
        if (!fs::exists(f)) {
          absent(fmt::format("llama2.c file '{}'", f));
          return info;
        }
      info.config = config_from_llama2c(e.llama2c_model);
      info.fingerprint = sha256_hex(fmt::format("llama2c v{}\nmodel {}\ntokenizer {}\n", kLlama2cConverterVersion,
                                                file_fingerprint(e.llama2c_model),
                                                file_fingerprint(e.llama2c_tokenizer)));
      return info;
    }
    case ModelEntry::Source::Make: {
      parse_dtype(e.make_dtype);  // checks the name
      info.config = ModelConfig::named_shape(e.make_shape);
      const RandomCheckpointOptions defaults;
      info.fingerprint = sha256_hex(fmt::format("make v{}\nshape {}\nseed {}\ndtype {}\ninit_std {}\ntokenizer {} {}\n",
                                                kMakeVersion, e.make_shape, e.make_seed,
                                                dtype_name(parse_dtype(e.make_dtype)), e.make_init_std,
                                                file_fingerprint(defaults.tokenizer_text), defaults.tokenizer_vocab));
      return info;
    }
  }
  return info;
}

std::string prepare_model(const ModelEntry& e, const ModelInfo& info, const std::string& cache_dir) {
  if (e.source == ModelEntry::Source::Path) return e.path;
  if (!info.present) fail("{}: model '{}' is absent", e.where, e.name);
  const fs::path final_dir = fs::path(cache_dir) / "models" / (e.name + "-" + info.fingerprint.substr(0, 16));
  return build_once(final_dir.string(), [&](const std::string& staging) {
    if (e.source == ModelEntry::Source::Llama2c) {
      convert_llama2c(e.llama2c_model, e.llama2c_tokenizer, staging);
    } else {
      RandomCheckpointOptions opt;
      opt.seed = e.make_seed;
      opt.init_std = e.make_init_std;
      opt.dtype = parse_dtype(e.make_dtype);
      write_random_checkpoint(ModelConfig::named_shape(e.make_shape), staging, opt);
    }
  });
}

}  // namespace kvlab
