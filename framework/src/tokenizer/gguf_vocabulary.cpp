// A GGUF file's vocabulary and chat template (tokenizer.ggml.*, tokenizer.chat_template) as kvlab's
// tokenizers: gpt2-style byte-level BPE with the pre-tokenizer split that tokenizer.ggml.pre names,
// or llama-style scored pieces with byte fallback. Declared in kvlab/model/gguf_model.h; kept apart
// from the model mapping so the parsers library (fuzz targets, sanitizer subset) has it without the
// model runtime.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "byte_level.h"
#include "split_patterns.h"
#include "kvlab/common/error.h"
#include "kvlab/model/gguf_model.h"
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "kvlab/tokenizer/llama2c_tokenizer.h"
#include "kvlab/tokenizer/sentencepiece_model_writer.h"

namespace kvlab {
namespace {

using json = nlohmann::json;

// llama.cpp's token types (tokenizer.ggml.token_type), the same numbers as SentencePiece's.
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

}  // namespace

namespace {

// tokenizer.ggml.token_type, or all-normal when the file has none; its length must match.
std::vector<int64_t> token_types(const GgufFile& f, size_t n) {
  if (!f.has("tokenizer.ggml.token_type")) return std::vector<int64_t>(n, kNormal);
  const auto& types = f.get_ints("tokenizer.ggml.token_type");
  if (types.size() != n)
    f.fail_key("tokenizer.ggml.token_type", fmt::format("{} entries for {} tokens", types.size(), n));
  return types;
}

std::optional<int64_t> token_id(const GgufFile& f, const std::string& key, size_t n) {
  if (!f.has(key)) return std::nullopt;
  const int64_t id = f.get_int(key);
  if (id < 0 || static_cast<size_t>(id) >= n) f.fail_key(key, fmt::format("token id {} outside the {} tokens", id, n));
  return id;
}

bool flag(const GgufFile& f, const std::string& key, bool fallback) { return f.has(key) ? f.get_bool(key) : fallback; }

// The tokenizer.json pre_tokenizer for tokenizer.ggml.pre. The splits are llama.cpp's for each
// name (llama-vocab.cpp) written as HF pre-tokenizers.
json pre_tokenizer_for(const GgufFile& f) {
  const std::string pre = f.has("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "gpt2";
  const auto byte_level = [](bool use_regex) {
    return json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
  };
  const auto split = [](bpe::SplitPattern p) {
    return json{{"type", "Split"},
                        {"pattern", {{"Regex", std::string(bpe::split_pattern_regex(p))}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  };
  const auto sequence = [](std::vector<json> steps) {
    return json{{"type", "Sequence"}, {"pretokenizers", steps}};
  };
  // GPT-2's own regex.
  if (pre == "gpt2" || pre == "default" || pre == "gpt-2" || pre == "phi-2" || pre == "olmo" || pre == "jais")
    return byte_level(true);
  // Each digit alone, then GPT-2's regex.
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "codeshell" ||
      pre == "exaone" || pre == "minerva")
    return sequence({json{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)});
  if (pre == "llama-bpe" || pre == "llama3" || pre == "dbrx" || pre == "smaug-bpe")
    return sequence({split(bpe::SplitPattern::kLlama3), byte_level(false)});
  if (pre == "qwen2" || pre == "deepseek-r1-qwen")
    return sequence({split(bpe::SplitPattern::kQwen2), byte_level(false)});
  f.fail_key("tokenizer.ggml.pre",
             fmt::format("pre-tokenizer '{}' is not supported (supported: gpt2, smollm, starcoder, llama-bpe, qwen2 "
                         "and the others that share their splits)",
                         pre));
}

// The raw text of a token in the byte-level alphabet (added tokens are matched as raw text).
std::string raw_text(const std::string& token) {
  std::string bytes;
  return bpe::byte_level_to_bytes(token, &bytes) ? bytes : token;
}

ScoredVocabulary scored_vocabulary(const GgufFile& f) {
  const auto& tokens = f.get_strings("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  ScoredVocabulary v;
  v.pieces.reserve(n);
  for (const std::string& t : tokens) {
    std::string piece;  // SentencePiece spells a space U+2581 (e2 96 81)
    for (size_t i = 0; i < t.size(); ++i) {
      if (t.compare(i, 3, "\xe2\x96\x81") == 0) piece += ' ', i += 2;
      else piece += t[i];
    }
    v.pieces.push_back(std::move(piece));
  }
  const auto& scores = f.get_floats("tokenizer.ggml.scores");
  if (scores.size() != n) f.fail_key("tokenizer.ggml.scores", fmt::format("{} scores for {} tokens", scores.size(), n));
  v.scores.assign(scores.begin(), scores.end());
  const auto types = token_types(f, n);
  v.control.assign(n, 0);
  for (size_t id = 0; id < n; ++id) {
    const int64_t type = types[id];
    if (type == kControl || type == kUnknown || type == kUnused) v.control[id] = 1;
    if (type != kByte) continue;
    const std::string& p = tokens[id];
    unsigned byte = 0;
    if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>' || std::sscanf(p.c_str() + 3, "%2X", &byte) != 1)
      f.fail_key("tokenizer.ggml.tokens", fmt::format("byte token {} is '{}', not <0xXX>", id, p));
    v.byte_ids[byte] = static_cast<int32_t>(id);
  }
  if (auto id = token_id(f, "tokenizer.ggml.bos_token_id", n)) v.bos = static_cast<int32_t>(*id);
  if (auto id = token_id(f, "tokenizer.ggml.eos_token_id", n)) v.eos = static_cast<int32_t>(*id);
  v.add_space_prefix = flag(f, "tokenizer.ggml.add_space_prefix", true);
  v.add_bos = flag(f, "tokenizer.ggml.add_bos_token", true);
  v.add_eos = flag(f, "tokenizer.ggml.add_eos_token", false);
  return v;
}

std::string tokenizer_model(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2" && model != "llama")
    f.fail_key("tokenizer.ggml.model", fmt::format("tokenizer '{}' is not supported (supported: gpt2, llama)", model));
  return model;
}

}  // namespace

json gguf_tokenizer_json(const GgufFile& f) {
  if (tokenizer_model(f) != "gpt2") f.fail_key("tokenizer.ggml.model", "a tokenizer.json is written for gpt2 vocabularies only");
  const auto& tokens = f.get_strings("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  const auto types = token_types(f, n);
  // Built as std::map-backed JSON: ordered_json's lookups are linear, quadratic over 10^5 tokens.
  json vocab = json::object();
  json added = json::array();
  for (size_t id = 0; id < n; ++id) {
    vocab.emplace(tokens[id], id);  // a duplicate spelling keeps its first id
    if (types[id] == kControl || types[id] == kUserDefined)
      added.push_back({{"id", id},
                       {"content", raw_text(tokens[id])},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", types[id] == kControl}});
  }
  json merges = json::array();
  if (f.has("tokenizer.ggml.merges"))
    for (const auto& m : f.get_strings("tokenizer.ggml.merges")) merges.push_back(m);

  const bool add_bos = flag(f, "tokenizer.ggml.add_bos_token", false);
  const bool add_eos = flag(f, "tokenizer.ggml.add_eos_token", false);
  json post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  if (add_bos || add_eos) {
    json single = json::array(), specials = json::object();
    const auto special = [&](const char* key, const char* which) {
      const auto id = token_id(f, key, n);
      if (!id) f.fail_key(key, fmt::format("missing, but tokenizer.ggml.add_{}_token is true", which));
      const std::string content = raw_text(tokens[static_cast<size_t>(*id)]);
      single.push_back({{"SpecialToken", {{"id", content}, {"type_id", 0}}}});
      specials[content] = {{"id", content}, {"ids", {*id}}, {"tokens", {content}}};
    };
    if (add_bos) special("tokenizer.ggml.bos_token_id", "bos");
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) special("tokenizer.ggml.eos_token_id", "eos");
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", single}, {"special_tokens", specials}};
  }
  json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer_for(f)},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  if (const auto unk = token_id(f, "tokenizer.ggml.unknown_token_id", n))
    root["model"]["unk_token"] = tokens[static_cast<size_t>(*unk)];
  return root;
}

std::string gguf_chat_template(const GgufFile& f) {
  return f.has("tokenizer.chat_template") ? f.get_string("tokenizer.chat_template") : "";
}

json gguf_tokenizer_config(const GgufFile& f) {
  const std::string model = tokenizer_model(f);
  const auto& tokens = f.get_strings("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  const bool gpt2 = model == "gpt2";
  json c = json::object();
  c["add_bos_token"] = flag(f, "tokenizer.ggml.add_bos_token", !gpt2);
  c["add_eos_token"] = flag(f, "tokenizer.ggml.add_eos_token", false);
  // As the vocabulary spells the token: the BPE reader and HF both find it so.
  const auto text = [&](int64_t id) { return tokens[static_cast<size_t>(id)]; };
  for (const auto& [key, name] : {std::pair<const char*, const char*>{"tokenizer.ggml.bos_token_id", "bos_token"},
                                  {"tokenizer.ggml.eos_token_id", "eos_token"},
                                  {"tokenizer.ggml.unknown_token_id", "unk_token"},
                                  {"tokenizer.ggml.padding_token_id", "pad_token"}})
    if (const auto id = token_id(f, key, n)) c[name] = text(*id);
  if (const std::string tmpl = gguf_chat_template(f); !tmpl.empty()) c["chat_template"] = tmpl;
  const std::string arch = f.get_string("general.architecture");
  if (f.has(arch + ".context_length")) c["model_max_length"] = f.get_int(arch + ".context_length");
  c["clean_up_tokenization_spaces"] = false;
  c["tokenizer_class"] = gpt2 ? "PreTrainedTokenizerFast" : "LlamaTokenizer";
  if (!gpt2) c["legacy"] = true, c["add_prefix_space"] = flag(f, "tokenizer.ggml.add_space_prefix", true);
  return c;
}

std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufFile& f) {
  if (tokenizer_model(f) == "llama") return std::make_unique<Llama2cTokenizer>(scored_vocabulary(f), f.path());
  const json tok = gguf_tokenizer_json(f);
  const json config = gguf_tokenizer_config(f);
  return BpeTokenizer::from_json(tok, &config, f.path() + " (tokenizer metadata)");
}

void write_gguf_tokenizer_files(const GgufFile& f, const std::string& out_dir) {
  namespace fs = std::filesystem;
  const bool gpt2 = tokenizer_model(f) == "gpt2";
  const json tokenizer_config = gguf_tokenizer_config(f);
  const auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = (fs::path(out_dir) / name).string();
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out) fail("{}: write failed", path);
  };
  if (gpt2) {
    write("tokenizer.json", gguf_tokenizer_json(f).dump(1) + "\n");
  } else {
    const ScoredVocabulary v = scored_vocabulary(f);
    SentencePieceModelSpec spec;
    spec.pieces = f.get_strings("tokenizer.ggml.tokens");
    spec.scores = v.scores;
    spec.types = token_types(f, spec.pieces.size());
    spec.add_dummy_prefix = v.add_space_prefix;
    spec.bos_id = v.bos ? *v.bos : -1;
    spec.eos_id = v.eos ? *v.eos : -1;
    spec.unk_id = f.has("tokenizer.ggml.unknown_token_id") ? f.get_int("tokenizer.ggml.unknown_token_id") : 0;
    write("tokenizer.model", sentencepiece_model_proto(spec));
  }
  write("tokenizer_config.json", tokenizer_config.dump(1) + "\n");
}

}  // namespace kvlab
