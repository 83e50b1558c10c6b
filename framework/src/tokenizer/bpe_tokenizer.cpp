#include "kvlab/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "added_tokens.h"
#include "bpe_model.h"
#include "byte_level.h"
#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/model/model_config.h"
#include "pre_tokenizer.h"
#include "unicode.h"

namespace kvlab {

namespace {

using json = nlohmann::json;
using bpe::AddedToken;
using bpe::PreTokenizerStep;
using bpe::SplitPattern;

std::string read_file(const std::string& path, const char* what) {
  check_input_file(path, what, kMaxTokenizerFileBytes);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: {} not found or not readable", path, what);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& path, const char* what) {
  const std::string text = read_file(path, what);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    fail("{}: invalid JSON ({})", path, msg);
  }
}

// Typed access to tokenizer.json values; failures name the file and the key path.
class JsonReader {
 public:
  explicit JsonReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    fail("{}: {}: {}", path_, key, what);
  }

  const json& member(const json& obj, const std::string& key, const std::string& where) const {
    if (!obj.is_object()) bad(where, "expected an object");
    const auto it = obj.find(key);
    if (it == obj.end()) bad(join(where, key), "missing");
    return *it;
  }

  std::string string(const json& obj, const std::string& key, const std::string& where) const {
    const json& v = member(obj, key, where);
    if (!v.is_string()) bad(join(where, key), "expected a string");
    return v.get<std::string>();
  }

  // An optional string: absent or null gives "".
  std::string string_or_empty(const json& obj, const std::string& key, const std::string& where) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return "";
    if (!it->is_string()) bad(join(where, key), "expected a string or null");
    return it->get<std::string>();
  }

  bool boolean(const json& obj, const std::string& key, const std::string& where, bool fallback) const {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) bad(join(where, key), "expected true or false");
    return it->get<bool>();
  }

  int32_t id(const json& v, const std::string& key) const {
    return id(v, [&] { return key; });
  }
  // As above with the key built only on failure (the vocabulary has 10^5 entries).
  template <typename KeyFn>
  int32_t id(const json& v, const KeyFn& key) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0) bad(key(), "expected a non-negative token id");
    // Ids index a table: one of 2^31 would allocate 64 GB before anything else is read. The bound
    // is the vocabulary limit of config.json.
    if (v.get<int64_t>() >= ModelConfig::kMaxVocabSize)
      bad(key(), fmt::format("token id {} is beyond the limit of {} ids", v.get<int64_t>(), ModelConfig::kMaxVocabSize));
    return static_cast<int32_t>(v.get<int64_t>());
  }

  // The component type of a normalizer/pre_tokenizer/... object.
  std::string type(const json& obj, const std::string& where) const { return string(obj, "type", where); }

  static std::string join(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
  }
  static std::string index(const std::string& where, size_t i) { return where + "[" + std::to_string(i) + "]"; }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

struct BpeTokenizer::Impl {
  std::string path;

  // ---- vocabulary (model.vocab plus added tokens), indexed by id
  std::vector<std::string> id_bytes;  // what decode emits for the id
  std::vector<uint8_t> id_used;
  std::vector<uint8_t> id_special;
  std::unordered_map<std::string, int32_t> added_by_content;

  // ---- pipeline: normalizer, added tokens, pre-tokenizer, BPE model, post-processor
  bool nfc = false;
  std::vector<AddedToken> added_tokens;
  bpe::AddedTokenMatcher raw_added;         // matched on the text as given
  bpe::AddedTokenMatcher normalized_added;  // matched after the normalizer
  bpe::PreTokenizer pre_tokenizer;
  bpe::BpeModel bpe_model;
  std::vector<int32_t> prefix_ids, suffix_ids;  // what add_special puts around the text
  std::optional<int32_t> bos, eos;

  void load(const json& root, const JsonReader& r);
  void load_model(const json& model, const JsonReader& r);
  void load_added_tokens(const json& root, const JsonReader& r);
  void load_normalizer(const json& n, const std::string& where, const JsonReader& r);
  void load_pre_tokenizer(const json& p, const std::string& where, const JsonReader& r);
  void load_post_processor(const json& p, const std::string& where, const JsonReader& r);
  void load_decoder(const json& d, const std::string& where, const JsonReader& r);
  void load_config(const json& config, const std::string& config_path);
  std::optional<int32_t> lookup_token_text(const std::string& text) const;

  void set_token(int32_t id, std::string bytes) {
    if (static_cast<size_t>(id) >= id_bytes.size()) {
      id_bytes.resize(id + 1);
      id_used.resize(id + 1, 0);
      id_special.resize(id + 1, 0);
    }
    id_bytes[id] = std::move(bytes);
    id_used[id] = 1;
  }

  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
};

// ---------------------------------------------------------------------------------------------
// Loading

void BpeTokenizer::Impl::load(const json& root, const JsonReader& r) {
  if (!root.is_object()) r.bad("(top level)", "expected a JSON object");
  load_model(r.member(root, "model", ""), r);
  load_added_tokens(root, r);
  if (const auto it = root.find("normalizer"); it != root.end()) load_normalizer(*it, "normalizer", r);
  const auto pre = root.find("pre_tokenizer");
  if (pre == root.end() || pre->is_null()) r.bad("pre_tokenizer", "missing; only byte-level BPE is supported");
  load_pre_tokenizer(*pre, "pre_tokenizer", r);
  const auto& steps = pre_tokenizer.steps();
  if (steps.empty() || steps.back().kind != PreTokenizerStep::kByteLevel)
    r.bad("pre_tokenizer", "no ByteLevel step; only byte-level BPE is supported");
  if (const auto it = root.find("post_processor"); it != root.end()) load_post_processor(*it, "post_processor", r);
  const auto dec = root.find("decoder");
  if (dec == root.end() || dec->is_null()) r.bad("decoder", "missing; expected ByteLevel");
  load_decoder(*dec, "decoder", r);
  // Added tokens matched after the normalizer are matched in normalized form.
  for (AddedToken a : added_tokens) {
    if (a.normalized) {
      if (nfc) a.content = unicode::nfc(a.content);
      normalized_added.add(a);
    } else {
      raw_added.add(a);
    }
  }
  if (!prefix_ids.empty()) bos = prefix_ids.front();
  if (!suffix_ids.empty()) eos = suffix_ids.back();
}

void BpeTokenizer::Impl::load_model(const json& model, const JsonReader& r) {
  if (!model.is_object()) r.bad("model", "expected an object");
  if (const auto t = model.find("type"); t != model.end() && *t != "BPE")
    r.bad("model.type", fmt::format("unsupported model type {} (expected \"BPE\")", t->dump()));
  if (const auto d = model.find("dropout"); d != model.end() && !d->is_null()) {
    if (!d->is_number()) r.bad("model.dropout", "expected a number or null");
    if (d->get<double>() > 0) r.bad("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!r.string_or_empty(model, key, "model").empty())
      r.bad(JsonReader::join("model", key), "not supported by byte-level BPE (expected null or \"\")");
  }
  bpe::BpeModel& m = bpe_model;
  m.ignore_merges = r.boolean(model, "ignore_merges", "model", false);
  m.fuse_unk = r.boolean(model, "fuse_unk", "model", false);
  m.byte_fallback = r.boolean(model, "byte_fallback", "model", false);

  const json& vocab = r.member(model, "vocab", "model");
  if (!vocab.is_object()) r.bad("model.vocab", "expected an object of token -> id");
  // Tokens as spelled in the file. The keys view strings of the parsed JSON, which outlives this.
  std::unordered_map<std::string_view, int32_t> vocab_by_token;
  vocab_by_token.reserve(vocab.size());
  m.vocab.reserve(vocab.size());
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int32_t id = r.id(it.value(), [&] { return "model.vocab." + it.key(); });
    vocab_by_token[it.key()] = id;
    // HF's ByteLevel decoder emits a token's UTF-8 as is when it is not spelled in the alphabet.
    if (bpe::byte_level_to_bytes(it.key(), &bytes)) {
      m.vocab[bytes] = id;
      set_token(id, bytes);
    } else {
      set_token(id, it.key());
    }
  }
  for (int b = 0; m.byte_fallback && b < 256; ++b) {
    const std::string name = fmt::format("<0x{:02X}>", b);
    if (const auto it = vocab_by_token.find(name); it != vocab_by_token.end()) m.byte_fallback_tokens[name] = it->second;
  }
  if (const std::string unk = r.string_or_empty(model, "unk_token", "model"); !unk.empty()) {
    const auto it = vocab_by_token.find(unk);
    if (it == vocab_by_token.end()) r.bad("model.unk_token", fmt::format("'{}' is not in model.vocab", unk));
    m.unk_id = it->second;
  }

  const json& list = r.member(model, "merges", "model");
  if (!list.is_array()) r.bad("model.merges", "expected an array");
  m.reserve_merges(list.size());
  std::string joined;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& merge = list[i];
    const auto where = [&] { return JsonReader::index("model.merges", i); };
    std::string_view left, right;
    if (merge.is_string()) {  // "a b", the older format
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        r.bad(where(), fmt::format("expected two tokens separated by one space, got '{}'", s));
      left = std::string_view(s).substr(0, space);
      right = std::string_view(s).substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {  // ["a", "b"]
      left = merge[0].get_ref<const std::string&>();
      right = merge[1].get_ref<const std::string&>();
    } else {
      r.bad(where(), "expected \"a b\" or [\"a\", \"b\"]");
    }
    const auto find = [&](std::string_view token) {
      const auto it = vocab_by_token.find(token);
      if (it == vocab_by_token.end()) r.bad(where(), fmt::format("token '{}' is not in model.vocab", token));
      return it->second;
    };
    joined.assign(left);
    joined += right;
    const int32_t a = find(left), b = find(right), merged = find(joined);
    m.add_merge(a, b, static_cast<int32_t>(i), merged);
  }
  m.finish();
}

void BpeTokenizer::Impl::load_added_tokens(const json& root, const JsonReader& r) {
  const auto list = root.find("added_tokens");
  if (list == root.end() || list->is_null()) return;
  if (!list->is_array()) r.bad("added_tokens", "expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const json& t = (*list)[i];
    const std::string where = JsonReader::index("added_tokens", i);
    AddedToken a;
    a.id = r.id(r.member(t, "id", where), where + ".id");
    a.content = r.string(t, "content", where);
    a.special = r.boolean(t, "special", where, false);
    a.lstrip = r.boolean(t, "lstrip", where, false);
    a.rstrip = r.boolean(t, "rstrip", where, false);
    a.single_word = r.boolean(t, "single_word", where, false);
    a.normalized = r.boolean(t, "normalized", where, !a.special);
    added_tokens.push_back(std::move(a));
  }
  std::string bytes;
  for (const AddedToken& a : added_tokens) {
    // Decoding an added token runs its content through the ByteLevel decoder like any token.
    set_token(a.id, bpe::byte_level_to_bytes(a.content, &bytes) ? bytes : a.content);
    id_special[a.id] = a.special;
    added_by_content[a.content] = a.id;
  }
}

void BpeTokenizer::Impl::load_normalizer(const json& n, const std::string& where, const JsonReader& r) {
  if (n.is_null()) return;
  const std::string type = r.type(n, where);
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    const json& list = r.member(n, "normalizers", where);
    if (!list.is_array()) r.bad(where + ".normalizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) load_normalizer(list[i], JsonReader::index(where + ".normalizers", i), r);
  } else {
    r.bad(where + ".type", fmt::format("unsupported normalizer '{}' (supported: NFC, Sequence)", type));
  }
}

void BpeTokenizer::Impl::load_pre_tokenizer(const json& p, const std::string& where, const JsonReader& r) {
  const auto& steps = pre_tokenizer.steps();
  if (!steps.empty() && steps.back().kind == PreTokenizerStep::kByteLevel)
    r.bad(where, "a pre-tokenizer after ByteLevel is not supported");
  const std::string type = r.type(p, where);
  PreTokenizerStep step;
  if (type == "Sequence") {
    const json& list = r.member(p, "pretokenizers", where);
    if (!list.is_array()) r.bad(where + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      load_pre_tokenizer(list[i], JsonReader::index(where + ".pretokenizers", i), r);
    return;
  }
  if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::kByteLevel;
    step.add_prefix_space = r.boolean(p, "add_prefix_space", where, true);
    step.use_regex = r.boolean(p, "use_regex", where, true);
    step.pattern = SplitPattern::kGpt2;
  } else if (type == "Split") {
    const std::string behavior = r.string(p, "behavior", where);
    const auto parsed = bpe::parse_split_behavior(behavior);
    if (!parsed)
      r.bad(where + ".behavior",
            fmt::format("unknown split behavior '{}' (expected Removed, Isolated, MergedWithPrevious, "
                        "MergedWithNext or Contiguous)",
                        behavior));
    step.behavior = *parsed;
    step.invert = r.boolean(p, "invert", where, false);
    const json& pattern = r.member(p, "pattern", where);
    if (pattern.contains("Regex")) {
      const std::string regex = r.string(pattern, "Regex", where + ".pattern");
      const auto known = bpe::find_split_pattern(regex);
      if (!known)
        r.bad(where + ".pattern.Regex",
              fmt::format("unsupported split regex '{}' (known: the GPT-2, Llama-3 and Qwen2 patterns)", regex));
      step.kind = PreTokenizerStep::kSplitPattern;
      step.pattern = *known;
    } else if (pattern.contains("String")) {
      step.kind = PreTokenizerStep::kSplitString;
      step.literal = r.string(pattern, "String", where + ".pattern");
      if (step.literal.empty()) r.bad(where + ".pattern.String", "empty split string");
    } else {
      r.bad(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    }
  } else if (type == "Digits") {  // HF: split at every numeric character (\p{N})
    step.kind = PreTokenizerStep::kSplitPattern;
    step.pattern = SplitPattern::kDigits;
    step.behavior = r.boolean(p, "individual_digits", where, false) ? bpe::SplitBehavior::kIsolated
                                                                     : bpe::SplitBehavior::kContiguous;
  } else {
    r.bad(where + ".type",
          fmt::format("unsupported pre-tokenizer '{}' (supported: ByteLevel, Split, Digits, Sequence)", type));
  }
  pre_tokenizer.add(std::move(step));
}

void BpeTokenizer::Impl::load_post_processor(const json& p, const std::string& where, const JsonReader& r) {
  if (p.is_null()) return;
  const std::string type = r.type(p, where);
  std::vector<int32_t> before, after;  // what this processor adds around its input
  if (type == "ByteLevel") {
    return;  // only adjusts offsets
  } else if (type == "Sequence") {
    const json& list = r.member(p, "processors", where);
    if (!list.is_array()) r.bad(where + ".processors", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      load_post_processor(list[i], JsonReader::index(where + ".processors", i), r);
    return;
  } else if (type == "TemplateProcessing") {
    const json& single = r.member(p, "single", where);
    const json& specials = r.member(p, "special_tokens", where);
    if (!single.is_array()) r.bad(where + ".single", "expected an array");
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string item_where = JsonReader::index(where + ".single", i);
      const json& item = single[i];
      if (item.contains("Sequence")) {
        const std::string id = r.string(item["Sequence"], "id", item_where + ".Sequence");
        if (id != "A" || seen_sequence) r.bad(item_where, "the single template must hold sequence A once");
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = r.string(item["SpecialToken"], "id", item_where + ".SpecialToken");
        const json& entry = r.member(specials, name, where + ".special_tokens");
        const json& ids = r.member(entry, "ids", where + ".special_tokens." + name);
        if (!ids.is_array()) r.bad(where + ".special_tokens." + name + ".ids", "expected an array");
        for (const json& id : ids) {
          (seen_sequence ? after : before).push_back(r.id(id, where + ".special_tokens." + name + ".ids"));
        }
      } else {
        r.bad(item_where, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    if (!seen_sequence) r.bad(where + ".single", "the template does not contain sequence A");
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    // "cls": [token, id], "sep": [token, id]; a single sequence becomes cls A sep.
    for (const char* key : {"cls", "sep"}) {
      const json& pair = r.member(p, key, where);
      if (!pair.is_array() || pair.size() != 2) r.bad(where + "." + key, "expected [token, id]");
      (std::string(key) == "cls" ? before : after).push_back(r.id(pair[1], where + "." + key));
    }
  } else {
    r.bad(where + ".type", fmt::format("unsupported post-processor '{}'", type));
  }
  // A later processor wraps what the earlier ones produced.
  prefix_ids.insert(prefix_ids.begin(), before.begin(), before.end());
  suffix_ids.insert(suffix_ids.end(), after.begin(), after.end());
}

void BpeTokenizer::Impl::load_decoder(const json& d, const std::string& where, const JsonReader& r) {
  const std::string type = r.type(d, where);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = r.member(d, "decoders", where);
    if (!list.is_array() || list.empty()) r.bad(where + ".decoders", "expected a non-empty array");
    for (size_t i = 0; i < list.size(); ++i) load_decoder(list[i], JsonReader::index(where + ".decoders", i), r);
    return;
  }
  r.bad(where + ".type", fmt::format("unsupported decoder '{}' (expected ByteLevel)", type));
}

// A token named by its text (tokenizer_config.json): an added token's content or a vocabulary
// entry in its byte-level spelling.
std::optional<int32_t> BpeTokenizer::Impl::lookup_token_text(const std::string& text) const {
  if (const auto it = added_by_content.find(text); it != added_by_content.end()) return it->second;
  std::string bytes;
  if (bpe::byte_level_to_bytes(text, &bytes)) {
    if (const auto it = bpe_model.vocab.find(bytes); it != bpe_model.vocab.end()) return it->second;
  }
  return std::nullopt;
}

void BpeTokenizer::Impl::load_config(const json& config, const std::string& config_path) {
  const JsonReader r(config_path);
  if (!config.is_object()) r.bad("(top level)", "expected a JSON object");
  // bos_token / eos_token: a string, {"content": ...} (an AddedToken), or null.
  const auto token_of = [&](const char* key) -> std::optional<std::optional<int32_t>> {
    const auto it = config.find(key);
    if (it == config.end()) return std::nullopt;  // not set: keep what the template says
    if (it->is_null()) return std::optional<int32_t>();
    std::string text;
    if (it->is_string()) {
      text = it->get<std::string>();
    } else if (it->is_object()) {
      text = r.string(*it, "content", key);
    } else {
      r.bad(key, "expected a string, an object with \"content\", or null");
    }
    const auto id = lookup_token_text(text);
    if (!id) r.bad(key, fmt::format("'{}' is not a token of {}", text, path));
    return id;
  };
  if (const auto b = token_of("bos_token")) bos = *b;
  if (const auto e = token_of("eos_token")) eos = *e;
  // transformers' Llama tokenizers add BOS/EOS by these flags; honour them where the
  // post-processor does not already add the token.
  if (r.boolean(config, "add_bos_token", "", false) && bos && (prefix_ids.empty() || prefix_ids.front() != *bos))
    prefix_ids.insert(prefix_ids.begin(), *bos);
  if (r.boolean(config, "add_eos_token", "", false) && eos && (suffix_ids.empty() || suffix_ids.back() != *eos))
    suffix_ids.push_back(*eos);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::string& path) {
  const json root = parse_json(path, "tokenizer file");
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  const JsonReader reader(path);
  impl->load(root, reader);

  const auto config = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config)) {
    const std::string config_path = config.string();
    impl->load_config(parse_json(config_path, "tokenizer config"), config_path);
  }
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json(const json& tokenizer, const json* config,
                                                      const std::string& source) {
  auto impl = std::make_unique<Impl>();
  impl->path = source;
  impl->load(tokenizer, JsonReader(source));
  if (config) impl->load_config(*config, source);
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::~BpeTokenizer() = default;

// ---------------------------------------------------------------------------------------------
// Encoding

void BpeTokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<bpe::AddedTokenMatcher::Piece> raw_pieces, pieces;
  raw_added.split(text, raw_pieces);
  for (const auto& raw : raw_pieces) {
    if (raw.id >= 0) {
      out.push_back(raw.id);
      continue;
    }
    const std::string normalized = nfc ? unicode::nfc(raw.text) : std::string();
    const std::string_view view = nfc ? std::string_view(normalized) : raw.text;
    pieces.clear();
    normalized_added.split(view, pieces);
    for (const auto& p : pieces) {
      if (p.id >= 0) {
        out.push_back(p.id);
      } else {
        pre_tokenizer.run(p.text, [&](std::string_view word) { bpe_model.encode_word(word, out); });
      }
    }
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> out;
  if (add_special) out = impl_->prefix_ids;
  out.reserve(out.size() + text.size() / 3 + 4);
  impl_->encode_text(text, out);
  if (add_special) out.insert(out.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding and lookups

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= m.id_bytes.size() || !m.id_used[id])
      fail("{}: token id {} is not in the vocabulary (size {})", m.path, id, m.id_bytes.size());
    if (skip_special && m.id_special[id]) continue;
    bytes += m.id_bytes[id];
  }
  return unicode::utf8_lossy(bytes);
}

int32_t BpeTokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_bytes.size()); }
std::optional<int32_t> BpeTokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> BpeTokenizer::eos_id() const { return impl_->eos; }

std::optional<std::string> BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_bytes.size() || !impl_->id_used[id]) return std::nullopt;
  return impl_->id_bytes[id];
}

std::optional<int32_t> BpeTokenizer::token_id(std::string_view token) const {
  const std::string key(token);
  if (const auto it = impl_->added_by_content.find(key); it != impl_->added_by_content.end()) return it->second;
  if (const auto it = impl_->bpe_model.vocab.find(key); it != impl_->bpe_model.vocab.end()) return it->second;
  return std::nullopt;
}

}  // namespace kvlab
