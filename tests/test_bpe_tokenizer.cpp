// BpeTokenizer (HF tokenizer.json byte-level BPE) against HF `tokenizers` outputs, llama.cpp's
// Qwen2 test vectors on the real Qwen3 tokenizer, and tokenizers built by hand in this file.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "kvlab/common/error.h"
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using json = nlohmann::json;
using Ids = std::vector<int32_t>;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::string tiny_dir(const std::string& name) { return std::string(KVLAB_TEST_DATA) + "/tokenizers/" + name; }

std::string qwen3_dir() { return test::shared_dir() + "/data/tokenizers/qwen3"; }

// Expects `fn` to throw kvlab::Error whose message contains each of `parts`.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no kvlab::Error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message spans lines: " << msg;
  }
}

// ---- fixtures made by scripts/make_bpe_fixture.py with HF tokenizers ----------------------------

class BpeTinyFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(BpeTinyFixture, MatchesHfTokenizers) {
  const std::string dir = tiny_dir(GetParam());
  const auto tok = BpeTokenizer::from_file(dir + "/tokenizer.json");
  const json cases = json::parse(read_text(dir + "/cases.json"));
  ASSERT_GT(cases["encode"].size(), 20u);
  for (const json& c : cases["encode"]) {
    const std::string text = c["text"];
    SCOPED_TRACE("text: " + json(text).dump());
    EXPECT_EQ(tok->encode(text), c["ids"].get<Ids>());
    EXPECT_EQ(tok->encode(text, /*add_special=*/true), c["ids_special"].get<Ids>());
    EXPECT_EQ(tok->decode(c["ids"].get<Ids>()), c["decoded"].get<std::string>());
    EXPECT_EQ(tok->decode(c["ids"].get<Ids>(), /*skip_special=*/true), c["decoded_skip_special"].get<std::string>());
  }
  for (const json& c : cases["decode"]) {
    SCOPED_TRACE("ids: " + c["ids"].dump());
    EXPECT_EQ(tok->decode(c["ids"].get<Ids>()), c["decoded"].get<std::string>());
  }
}

// tiny_bpe: Llama-3 style; tiny_bpe_gpt2: GPT-2 style; tiny_bpe_split: every Split behavior.
INSTANTIATE_TEST_SUITE_P(Bpe, BpeTinyFixture, ::testing::Values("tiny_bpe", "tiny_bpe_gpt2", "tiny_bpe_split"));

TEST(BpeTiny, SpecialTokensAndSizes) {
  const auto llama = BpeTokenizer::from_file(tiny_dir("tiny_bpe") + "/tokenizer.json");
  EXPECT_EQ(llama->kind(), "bpe");
  EXPECT_EQ(llama->vocab_size(), 361);  // 360 trained + <think>
  EXPECT_EQ(llama->bos_id(), 0);        // tokenizer_config.json: <|begin_of_text|>
  EXPECT_EQ(llama->eos_id(), 1);        // tokenizer_config.json: {"content": "<|end_of_text|>"}
  EXPECT_EQ(llama->token_id("<think>"), 360);
  EXPECT_EQ(llama->encode("<|end_of_text|>", true), (Ids{0, 1}));

  // GPT-2 style: ByteLevel post-processor and no tokenizer_config.json, so neither BOS nor EOS.
  const auto gpt2 = BpeTokenizer::from_file(tiny_dir("tiny_bpe_gpt2") + "/tokenizer.json");
  EXPECT_EQ(gpt2->bos_id(), std::nullopt);
  EXPECT_EQ(gpt2->eos_id(), std::nullopt);
  EXPECT_EQ(gpt2->encode("Hello", true), gpt2->encode("Hello", false));
}

// Cases derived by hand from the fixtures' vocabularies and merges (tokens in the byte-level
// spelling, where Ġ is a space).
TEST(BpeTiny, HandDerivedIdsGpt2Style) {
  // tiny_bpe_gpt2 (no ignore_merges; add_prefix_space turns "the" into " the"). Relevant merges by
  // rank: 0 "Ġ t" -> Ġt 257, 1 "Ġt h" -> Ġth 258, 2 "Ġth e" -> Ġthe 259, 4 "r e" -> re 261,
  // 5 "Ġ l" -> Ġl 262, 8 "Ġ d" -> Ġd 265, 19 "h e" -> he 276, 21 "o g" -> og 278,
  // 26 "Ġd og" -> Ġdog 283, 28 "T he" -> The 285, 32 "a z" -> az 289, 59 "Ġ The" -> ĠThe 316,
  // 61 "Ġthe re" -> Ġthere 318, 62 "Ġl az" -> Ġlaz 319, 65 "Ġlaz y" -> Ġlazy 322.
  // Bytes: 'Ġ' 221, 'T' 52, 'h' 72, 'y' 89, '.' 14.
  const auto tok = BpeTokenizer::from_file(tiny_dir("tiny_bpe_gpt2") + "/tokenizer.json");
  for (const auto& [token, id] : std::vector<std::pair<std::string, int32_t>>{
           {" ", 221}, {"T", 52}, {"h", 72}, {"y", 89}, {".", 14}, {" the", 259}, {" there", 318},
           {" lazy", 322}, {" dog", 283}, {"The", 285}, {" The", 316}}) {
    EXPECT_EQ(tok->token_id(token), id) << token;
  }
  // " the": Ġt (rank 0), then Ġth (rank 1) beats he (rank 19), then Ġthe.
  // " lazy": Ġl, az, Ġlaz, Ġlazy. " dog": Ġd (8), og (21), Ġdog (26). "." alone.
  EXPECT_EQ(tok->encode("the lazy dog."), (Ids{259, 322, 283, 14}));
  // " there": Ġthe as above, r+e -> re, then Ġthe+re.
  EXPECT_EQ(tok->encode("there"), (Ids{318}));
  // " The": he (19), The (28), ĠThe (59). " Thy": no merge applies to Ġ T h y.
  EXPECT_EQ(tok->encode("The"), (Ids{316}));
  EXPECT_EQ(tok->encode("Thy"), (Ids{221, 52, 72, 89}));
}

TEST(BpeTiny, HandDerivedIdsLlama3Style) {
  // tiny_bpe: the Llama-3 split, then ignore_merges takes whole-word entries as they are:
  // The 287, Ġlazy 320, Ġdog 284, '.' 15, 'Ġ' 222. Bytes 'T' 53, 'h' 73, 'y' 90; no merge joins
  // T+h or h+y (only "h e" and "T he" exist).
  const auto tok = BpeTokenizer::from_file(tiny_dir("tiny_bpe") + "/tokenizer.json");
  for (const auto& [token, id] : std::vector<std::pair<std::string, int32_t>>{
           {"The", 287}, {" lazy", 320}, {" dog", 284}, {".", 15}, {" ", 222}, {"T", 53}, {"h", 73}, {"y", 90}}) {
    EXPECT_EQ(tok->token_id(token), id) << token;
  }
  EXPECT_EQ(tok->encode("The lazy dog."), (Ids{287, 320, 284, 15}));
  EXPECT_EQ(tok->encode("Thy"), (Ids{53, 73, 90}));
  // Two spaces before "dog": \s+(?!\S) takes the first space alone, the second joins " dog".
  EXPECT_EQ(tok->encode("  dog"), (Ids{222, 284}));
  // Special tokens written in the text are single ids; the template adds BOS (0) in front.
  EXPECT_EQ(tok->encode("<|begin_of_text|>The", true), (Ids{0, 0, 287}));
  EXPECT_EQ(tok->decode({0, 287, 1}), "<|begin_of_text|>The<|end_of_text|>");
  EXPECT_EQ(tok->decode({0, 287, 1}, true), "The");
}

// ---- a tokenizer.json written by hand, small enough to reason about completely -----------------

// GPT-2's byte -> character mapping, written independently of the implementation.
std::string byte_char(int b) {
  int cp = b;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
    int n = 0;
    for (int x = 0; x < b; ++x) n += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Vocabulary: byte b has id b; then the merges' results from id 256 on. Merges (in rank order):
//   "b c" -> bc 256, "a b" -> ab 257, "a a" -> aa 258, "Ġ a" -> Ġa 259, "aa a" -> aaa 260,
// plus "abc" 261 (a whole-word entry no merge builds), <|x|> 262 (special), <y> 263 (not special).
json hand_tokenizer(bool string_merges, bool ignore_merges, const json& pre_tokenizer) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"b", "c"}, {"a", "b"}, {"a", "a"}, {byte_char(' '), "a"}, {"aa", "a"}};
  json merge_list = json::array();
  int next = 256;
  for (const auto& [l, r] : merges) {
    vocab[l + r] = next++;
    merge_list.push_back(string_merges ? json(l + " " + r) : json::array({l, r}));
  }
  vocab["abc"] = 261;
  return json{{"version", "1.0"},
              {"added_tokens",
               {{{"id", 262}, {"content", "<|x|>"}, {"special", true}, {"normalized", false}},
                {{"id", 263}, {"content", "<y>"}, {"special", false}, {"normalized", true}}}},
              {"normalizer", nullptr},
              {"pre_tokenizer", pre_tokenizer},
              {"post_processor",
               {{"type", "TemplateProcessing"},
                {"single", {{{"SpecialToken", {{"id", "<|x|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                {"pair", json::array()},
                {"special_tokens", {{"<|x|>", {{"id", "<|x|>"}, {"ids", {262}}, {"tokens", {"<|x|>"}}}}}}}},
              {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
              {"model",
               {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false},
                {"byte_fallback", false}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merge_list}}}};
}

json byte_level(bool add_prefix_space) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", true}};
}

std::unique_ptr<BpeTokenizer> load_json(const test::TempDir& dir, const json& j) {
  write_text(dir / "tokenizer.json", j.dump());
  return BpeTokenizer::from_file(dir / "tokenizer.json");
}

TEST(BpeHandBuilt, MergeOrderAndBothMergeFormats) {
  for (bool string_merges : {true, false}) {
    SCOPED_TRACE(string_merges ? "\"a b\" merges" : "[a, b] merges");
    test::TempDir dir;
    const auto tok = load_json(dir, hand_tokenizer(string_merges, false, byte_level(false)));
    EXPECT_EQ(tok->vocab_size(), 264);
    // "b c" outranks "a b": abc -> a + bc, not ab + c.
    EXPECT_EQ(tok->encode("abc"), (Ids{'a', 256}));
    EXPECT_EQ(tok->encode("ab"), (Ids{257}));
    // Equal ranks merge leftmost first: aaaa -> aa aa (then "aa a" cannot apply), aaaaa -> aa aa a
    // -> aa aaa.
    EXPECT_EQ(tok->encode("aaaa"), (Ids{258, 258}));
    EXPECT_EQ(tok->encode("aaa"), (Ids{260}));
    EXPECT_EQ(tok->encode("aaaaa"), (Ids{258, 260}));
    // The GPT-2 split keeps the space with the word: " a" is one pre-token, "Ġ a" merges it.
    EXPECT_EQ(tok->encode("c a"), (Ids{'c', 259}));
    // Added tokens: found anywhere, special or not; the template puts <|x|> first.
    EXPECT_EQ(tok->encode("a<|x|>b<y>c"), (Ids{'a', 262, 'b', 263, 'c'}));
    EXPECT_EQ(tok->encode("ab", true), (Ids{262, 257}));
    EXPECT_EQ(tok->bos_id(), 262);
    EXPECT_EQ(tok->decode({262, 257, 263}), "<|x|>ab<y>");
    EXPECT_EQ(tok->decode({262, 257, 263}, true), "ab<y>");
  }
}

TEST(BpeHandBuilt, IgnoreMergesAndPrefixSpace) {
  test::TempDir dir;
  // ignore_merges: a pre-token that is itself in the vocabulary wins over the merges.
  EXPECT_EQ(load_json(dir, hand_tokenizer(false, true, byte_level(false)))->encode("abc"), (Ids{261}));
  // add_prefix_space: "a" is encoded as " a".
  EXPECT_EQ(load_json(dir, hand_tokenizer(false, false, byte_level(true)))->encode("a"), (Ids{259}));
}

TEST(BpeHandBuilt, ByteFallbackAndUnk) {
  // A vocabulary missing most bytes. HF falls back on the UTF-8 bytes of the missing byte's
  // alphabet character (a space is "Ġ" = C4 A0), and to <unk> (fused) where those are missing too.
  // Expected ids from HF tokenizers 0.23.
  const json j = {
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
        {"vocab", {{"a", 0}, {"b", 1}, {"<0xC4>", 2}, {"<0xA0>", 3}, {"<unk>", 4}, {"<0x20>", 5}, {"ab", 6}}},
        {"merges", json::array({json::array({"a", "b"})})}}}};
  test::TempDir dir;
  const auto tok = load_json(dir, j);
  EXPECT_EQ(tok->encode("a b"), (Ids{0, 2, 3, 1}));
  EXPECT_EQ(tok->encode("a!!b"), (Ids{0, 4, 1}));
  EXPECT_EQ(tok->encode("ab"), (Ids{6}));
  EXPECT_EQ(tok->encode("a  !b"), (Ids{0, 2, 3, 2, 3, 4, 1}));
}

TEST(BpeHandBuilt, RejectsWhatItCannotDo) {
  test::TempDir dir;
  const std::string path = dir / "tokenizer.json";
  auto j = hand_tokenizer(false, false, byte_level(false));
  j["model"]["type"] = "Unigram";
  expect_error([&] { load_json(dir, j); }, {path, "model.type", "Unigram"});

  j = hand_tokenizer(false, false,
                     {{"type", "Split"}, {"pattern", {{"Regex", "\\w+|\\s+"}}}, {"behavior", "Isolated"}, {"invert", false}});
  expect_error([&] { load_json(dir, j); }, {path, "pre_tokenizer.pattern.Regex", "\\w+|\\s+"});

  j = hand_tokenizer(false, false, {{"type", "Metaspace"}, {"replacement", "_"}});
  expect_error([&] { load_json(dir, j); }, {path, "pre_tokenizer.type", "Metaspace"});

  j = hand_tokenizer(false, false, byte_level(false));
  j["model"]["merges"][0] = "b q";
  expect_error([&] { load_json(dir, j); }, {path, "model.merges[0]", "'bq'"});

  j = hand_tokenizer(false, false, byte_level(false));
  j["normalizer"] = {{"type", "NFKC"}};
  expect_error([&] { load_json(dir, j); }, {path, "normalizer.type", "NFKC"});

  j = hand_tokenizer(false, false,
                     {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", "Sideways"}, {"invert", false}});
  expect_error([&] { load_json(dir, j); }, {path, "pre_tokenizer.behavior", "Sideways"});

  // Missing keys are named with their path in the file.
  j = hand_tokenizer(false, false, byte_level(false));
  j["model"].erase("vocab");
  expect_error([&] { load_json(dir, j); }, {path, "model.vocab", "missing"});
  j = hand_tokenizer(false, false, byte_level(false));
  j.erase("decoder");
  expect_error([&] { load_json(dir, j); }, {path, "decoder", "missing"});
  j = hand_tokenizer(false, false, byte_level(false));
  j["added_tokens"][1].erase("content");
  expect_error([&] { load_json(dir, j); }, {path, "added_tokens[1].content", "missing"});

  const auto tok = load_json(dir, hand_tokenizer(false, false, byte_level(false)));
  expect_error([&] { tok->decode({5000}); }, {path, "5000"});
}

TEST(BpeErrors, MissingFileAndBadJsonNameThePath) {
  test::TempDir dir;
  expect_error([&] { BpeTokenizer::from_file(dir / "nope.json"); }, {dir / "nope.json"});
  write_text(dir / "tokenizer.json", "{\"model\": {\"type\": \"BPE\",\n \"vocab\": ");
  expect_error([&] { BpeTokenizer::from_file(dir / "tokenizer.json"); }, {dir / "tokenizer.json", "invalid JSON"});
  // A broken tokenizer_config.json beside a good tokenizer.json is named too.
  write_text(dir / "tokenizer.json", hand_tokenizer(false, false, byte_level(false)).dump());
  write_text(dir / "tokenizer_config.json", "{\"bos_token\": ");
  expect_error([&] { BpeTokenizer::from_file(dir / "tokenizer.json"); }, {dir / "tokenizer_config.json"});
  write_text(dir / "tokenizer_config.json", "{\"bos_token\": \"<nope>\"}");
  expect_error([&] { BpeTokenizer::from_file(dir / "tokenizer.json"); },
               {dir / "tokenizer_config.json", "bos_token", "<nope>"});
}

TEST(BpeConfig, BosEosFromTemplateAndConfig) {
  test::TempDir dir;
  auto j = hand_tokenizer(false, false, byte_level(false));  // its template puts <|x|> (262) first
  write_text(dir / "tokenizer_config.json", R"({"bos_token": "<|x|>", "add_bos_token": true})");
  auto tok = load_json(dir, j);
  EXPECT_EQ(tok->encode("ab", true), (Ids{262, 257}));  // the flag does not add a second BOS
  EXPECT_EQ(tok->eos_id(), std::nullopt);

  // Without a template adding them, add_bos_token / add_eos_token add the configured tokens.
  j["post_processor"] = nullptr;
  write_text(dir / "tokenizer_config.json",
             R"({"bos_token": {"content": "<|x|>"}, "eos_token": "<y>", "add_bos_token": true, "add_eos_token": true})");
  tok = load_json(dir, j);
  EXPECT_EQ(tok->bos_id(), 262);
  EXPECT_EQ(tok->eos_id(), 263);
  EXPECT_EQ(tok->encode("ab", true), (Ids{262, 257, 263}));
  EXPECT_EQ(tok->encode("ab", false), (Ids{257}));

  // Named tokens alone add nothing (Qwen2: eos_token set, add_bos_token false).
  write_text(dir / "tokenizer_config.json", R"({"bos_token": null, "eos_token": "<y>", "add_bos_token": false})");
  tok = load_json(dir, j);
  EXPECT_EQ(tok->bos_id(), std::nullopt);
  EXPECT_EQ(tok->encode("ab", true), (Ids{257}));
}

TEST(BpeLoad, LoadTokenizerPicksByFile) {
  EXPECT_EQ(load_tokenizer(tiny_dir("tiny_bpe"))->kind(), "bpe");
  EXPECT_EQ(load_tokenizer(tiny_dir("tiny_bpe"))->bos_id(), 0);
  // A directory with both files (Llama-2 and Mistral repos) gets SentencePiece.
  test::TempDir dir;
  std::filesystem::copy_file(tiny_dir("tiny_bpe") + "/tokenizer.json", dir / "tokenizer.json");
  EXPECT_EQ(load_tokenizer(dir.str())->kind(), "bpe");
  std::filesystem::copy_file(std::string(KVLAB_TEST_DATA) + "/hf_reference/llama_mha/tokenizer.model",
                             dir / "tokenizer.model");
  EXPECT_EQ(load_tokenizer(dir.str())->kind(), "sentencepiece");
}

// ---- round trips ------------------------------------------------------------------------------

const std::vector<std::string> kRoundTrip = {
    "",
    "Hello, world!",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\r\n\r\n\n",
    "I'm sure they'LL say it's fine",
    "1234567890 3.14159 1,000,000",
    "naïve café, Ünïcödé, Привет мир, Γειά σου",
    "日本語のテキストと中文",
    "emoji 🦙🚀👍🏽 👨‍👩‍👧 ✅",
    "ក្រុមហ៊ុន Khmer with marks",
    "mixed <|begin_of_text|> specials <|end_of_text|>",
    std::string("control \x01\x02\x7f bytes"),
    "!!!??? ... --- === ``` '''",
};

TEST(BpeRoundTrip, TinyFixtures) {
  for (const char* name : {"tiny_bpe", "tiny_bpe_gpt2"}) {
    const auto tok = BpeTokenizer::from_file(tiny_dir(name) + "/tokenizer.json");
    for (const auto& s : kRoundTrip) {
      // GPT-2 style add_prefix_space puts a space in front of text not starting with one.
      const std::string expect = std::string(name) == "tiny_bpe_gpt2" && !s.empty() && s[0] != ' ' ? " " + s : s;
      EXPECT_EQ(tok->decode(tok->encode(s)), expect) << name << ": " << s;
    }
  }
}

TEST(BpeRoundTrip, InvalidUtf8InputIsEncodedAsBytes) {
  // Not valid text, so not what HF accepts; the bytes still get tokens, and decoding replaces each
  // maximal invalid sequence with U+FFFD (the cut-off 3-byte character counts as one).
  const auto tok = BpeTokenizer::from_file(tiny_dir("tiny_bpe") + "/tokenizer.json");
  const Ids ids = tok->encode("ok\xff\xe6\x97 \xcc\x81");
  EXPECT_EQ(tok->decode(ids), "ok\xEF\xBF\xBD\xEF\xBF\xBD \xcc\x81");
}

// ---- the real Qwen3 tokenizer ---------------------------------------------------------------

class BpeQwen3 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_shared() || !std::filesystem::exists(qwen3_dir() + "/tokenizer.json"))
      GTEST_SKIP() << qwen3_dir() << "/tokenizer.json missing (needs ../shared beside the repo)";
    static std::shared_ptr<BpeTokenizer> cached = BpeTokenizer::from_file(qwen3_dir() + "/tokenizer.json");
    tok = cached;
  }
  std::shared_ptr<BpeTokenizer> tok;
};

// llama.cpp's test vectors: inputs separated by "\n__ggml_vocab_test__\n" lines, and one line of
// space-separated ids (HF encode without special tokens) per input.
TEST_F(BpeQwen3, LlamaCppVectors) {
  const std::string inp = read_text(qwen3_dir() + "/ggml-vocab-qwen2.gguf.inp");
  const std::string out = read_text(qwen3_dir() + "/ggml-vocab-qwen2.gguf.out");
  const std::string marker = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0, hit; (hit = inp.find(marker, pos)) != std::string::npos; pos = hit + marker.size())
    inputs.push_back(inp.substr(pos, hit - pos));
  std::vector<Ids> expected;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    Ids ids;
    std::istringstream words(line);
    for (int32_t id; words >> id;) ids.push_back(id);
    expected.push_back(ids);
  }
  ASSERT_EQ(inputs.size(), 46u);
  ASSERT_EQ(expected.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + ": " + json(inputs[i]).dump());
    EXPECT_EQ(tok->encode(inputs[i]), expected[i]);
    EXPECT_EQ(tok->decode(tok->encode(inputs[i])), inputs[i]);
  }
}

TEST_F(BpeQwen3, SpecialTokens) {
  EXPECT_EQ(tok->vocab_size(), 151669);
  EXPECT_EQ(tok->bos_id(), std::nullopt);  // tokenizer_config.json: "bos_token": null
  const json config = json::parse(read_text(qwen3_dir() + "/tokenizer_config.json"));
  EXPECT_EQ(tok->eos_id(), tok->token_id(config["eos_token"].get<std::string>()));
  // Qwen adds nothing with add_special; its chat markers are single ids.
  EXPECT_EQ(tok->encode("Hi", true), tok->encode("Hi", false));
  EXPECT_EQ(tok->encode("<|im_start|>user\nHi<|im_end|>"),
            (Ids{151644, tok->token_id("user").value(), 198, tok->token_id("Hi").value(), 151645}));
  EXPECT_EQ(tok->decode(tok->encode("<|im_start|>x<|im_end|>"), true), "x");
  // NFC: a decomposed é encodes like the composed one.
  EXPECT_EQ(tok->encode("caf\x65\xcc\x81"), tok->encode("caf\xc3\xa9"));
}

TEST_F(BpeQwen3, RoundTrip) {
  for (const auto& s : kRoundTrip) EXPECT_EQ(tok->decode(tok->encode(s)), s) << s;
}

TEST_F(BpeQwen3, ConcurrentEncodeAgrees) {
  // Words made up here are not in the word cache yet, so the threads fill it concurrently; every
  // thread must see the same ids, and so must a later sequential pass reading the cache.
  std::mt19937 rng(123);
  std::vector<std::string> texts;
  for (int i = 0; i < 400; ++i) {
    std::string s;
    for (int w = 0; w < 8; ++w) {
      s += ' ';
      for (int n = 3 + rng() % 6; n > 0; --n) s += static_cast<char>('a' + rng() % 26);
    }
    texts.push_back(s + " " + kRoundTrip[i % kRoundTrip.size()]);
  }
  std::vector<std::vector<Ids>> results(4, std::vector<Ids>(texts.size()));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < texts.size(); ++k) {
        const size_t i = (k + t * texts.size() / 4) % texts.size();  // each thread starts elsewhere
        results[t][i] = tok->encode(texts[i]);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (size_t i = 0; i < texts.size(); ++i) {
    const Ids sequential = tok->encode(texts[i]);
    for (int t = 0; t < 4; ++t) ASSERT_EQ(results[t][i], sequential) << "thread " << t << ": " << texts[i];
  }
}

// Wikitext-2 test split: decode(encode(text)) must give the text back, and the encode rate is
// printed for reference (not asserted: machines differ).
TEST_F(BpeQwen3, WikitextRoundTripAndSpeed) {
  const std::string path = test::shared_dir() + "/data/wikitext-2-raw/wiki.test.raw";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " missing";
  const std::string text = read_text(path);
  const auto start = std::chrono::steady_clock::now();
  const Ids ids = tok->encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ bpe      ] encoded %.2f MB into %zu tokens in %.3f s (%.2f MB/s, cold cache)\n", text.size() / 1e6,
              ids.size(), seconds, text.size() / 1e6 / seconds);
  EXPECT_EQ(tok->decode(ids), text);
}

}  // namespace
}  // namespace kvlab
