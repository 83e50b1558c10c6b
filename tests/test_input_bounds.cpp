// Hostile inputs to the parsers (issue 19): sizes are checked before anything is multiplied or
// allocated, and what is not a regular file (a FIFO, a device, a directory) is refused by name
// instead of blocking forever or reading without end. Each finding of the issue has a case here;
// the command-line ones are in test_hardening_cli.cpp.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../methods/kvmix/kvmix_plan_file.h"
#include "kvlab/common/checked.h"
#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/eval/longbench/records.h"
#include "kvlab/eval/longbench/scorer.h"
#include "kvlab/model/llama2c_import.h"
#include "kvlab/model/gguf_file.h"
#include "kvlab/model/model_config.h"
#include "kvlab/model/safetensors.h"
#include "kvlab/quant/plan_file.h"
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "kvlab/tokenizer/llama2c_tokenizer.h"
#include "kvlab/tokenizer/sentencepiece_tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using json = nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a kvlab::Error: ") + e.what();
  }
  return "no error";
}

// The message of `f` refusing `path`, with a guard: a reader that blocks on the FIFO is released
// after 10 s by a writer opening and closing it, so the test fails instead of hanging.
std::string error_of_fifo(const std::string& path, const std::function<void()>& f) {
  std::atomic<bool> done{false};
  std::thread guard([&] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    while (!done) {  // a reader is stuck in open() or read(): give it a writer, then end of file
      const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  const std::string msg = error_of(f);
  done = true;
  guard.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << path << " blocked the reader";
  return msg;
}

void make_fifo(const std::string& path) { ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path; }

json tiny_config() {
  return {{"model_type", "llama"}, {"vocab_size", 512}, {"hidden_size", 64}, {"intermediate_size", 176},
          {"num_hidden_layers", 4}, {"num_attention_heads", 4}, {"num_key_value_heads", 4}, {"head_dim", 16}};
}

// --- checked arithmetic -----------------------------------------------------------------------

TEST(CheckedArithmetic, ProductsAndSumsThatOverflowAreErrorsNamingTheTerms) {
  EXPECT_EQ(product_or_fail({3, 5, 7}, "x"), 105);
  EXPECT_EQ(product_or_fail({INT64_MAX, 1}, "x"), INT64_MAX);
  EXPECT_EQ(error_of([] { product_or_fail({int64_t{1} << 32, int64_t{1} << 31}, "q_dim"); }),
            "q_dim = 4294967296 x 2147483648 overflows a 64-bit integer");
  EXPECT_NE(error_of([] { product_or_fail({-(int64_t{1} << 62), 4}, "w"); }).find("overflows"), std::string::npos);
  EXPECT_EQ(sum_or_fail(INT64_MAX - 1, 1, "s"), INT64_MAX);
  EXPECT_EQ(error_of([] { sum_or_fail(INT64_MAX, 1, "bytes"); }),
            "bytes = 9223372036854775807 + 1 overflows a 64-bit integer");
  EXPECT_EQ(error_of([] { require_at_most(10, 9, "n"); }), "n is 10, above the limit of 9");
  EXPECT_FALSE(checked_mul(INT64_MIN, -1).has_value());
  EXPECT_FALSE(checked_add(INT64_MIN, -1).has_value());
}

// --- config.json: absurd counts and products (issue 19 findings 1 and 2) ---------------------

TEST(HostileConfig, HugeLayerCountsAreRefusedBeforeAnyWork) {
  for (int64_t layers : {int64_t{1'000'000'000}, int64_t{1'000'000'000'000}}) {
    json j = tiny_config();
    j["num_hidden_layers"] = layers;
    const auto start = std::chrono::steady_clock::now();
    const std::string msg = error_of([&] { ModelConfig::from_json(j, "config.json"); });
    EXPECT_EQ(msg, fmt::format("config.json: 'num_hidden_layers' is {}, above the limit of 4096", layers));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  }
}

TEST(HostileConfig, DimensionsWhoseProductsOverflowAreRefusedNamingTheKey) {
  // hidden_size 2^61 .. 2^62 (head_dim then defaults to hidden / heads) and a huge head count made
  // num_attention_heads * head_dim overflow in q_dim() before any shape check.
  for (int64_t hidden : {int64_t{1} << 61, int64_t{3} << 60, int64_t{1} << 62}) {
    json j = tiny_config();
    j["hidden_size"] = hidden;
    j.erase("head_dim");
    EXPECT_EQ(error_of([&] { ModelConfig::from_json(j, "c.json"); }),
              fmt::format("c.json: 'hidden_size' is {}, above the limit of 1048576", hidden));
  }
  json j = tiny_config();
  j["num_attention_heads"] = int64_t{1} << 40;
  j["num_key_value_heads"] = 4;
  EXPECT_EQ(error_of([&] { ModelConfig::from_json(j, "c.json"); }),
            "c.json: 'num_attention_heads' is 1099511627776, above the limit of 4096");
  for (const char* key : {"vocab_size", "intermediate_size", "head_dim", "num_key_value_heads"}) {
    json k = tiny_config();
    k[key] = INT64_MAX;
    EXPECT_NE(error_of([&] { ModelConfig::from_json(k, "c.json"); }).find(std::string("'") + key + "' is 9223372036854775807, above the limit"),
              std::string::npos) << key;
  }
  // A config built in code and never validated fails in the product, not with undefined behaviour.
  ModelConfig c = ModelConfig::from_json(tiny_config(), "c.json");
  c.num_attention_heads = int64_t{1} << 40;
  c.head_dim = int64_t{1} << 40;
  EXPECT_EQ(error_of([&] { c.q_dim(); }),
            "q_dim = num_attention_heads x head_dim = 1099511627776 x 1099511627776 overflows a 64-bit integer");
  // The caps are chosen so that the widest config within all of them still has a parameter count
  // that fits in 64 bits (computed here in 128 bits).
  json wide = tiny_config();
  wide["vocab_size"] = ModelConfig::kMaxVocabSize;
  wide["num_hidden_layers"] = ModelConfig::kMaxLayers;
  wide["hidden_size"] = ModelConfig::kMaxHiddenSize;
  wide["intermediate_size"] = ModelConfig::kMaxIntermediateSize;
  wide["num_attention_heads"] = ModelConfig::kMaxHeads;
  wide["num_key_value_heads"] = ModelConfig::kMaxHeads;
  wide["head_dim"] = ModelConfig::kMaxHeadDim;
  wide["attention_bias"] = true;
  const ModelConfig w = ModelConfig::from_json(wide, "w.json");
  using i128 = __int128;
  const i128 wH = w.hidden_size, wq = i128{w.num_attention_heads} * w.head_dim, wkv = wq;
  const i128 wper = 2 * wH * wq + 2 * wH * wkv + wq + 2 * wkv + 3 * wH * w.intermediate_size + 2 * wH;
  const i128 wtotal = i128{w.num_hidden_layers} * wper + i128{w.vocab_size} * wH * 2 + wH;
  ASSERT_LT(wtotal, i128{INT64_MAX});
  EXPECT_EQ(i128{w.parameter_count()}, wtotal);
  // Every cap at once still fits: the largest valid config's parameter count is computed exactly.
  json big = tiny_config();
  big["vocab_size"] = ModelConfig::kMaxVocabSize;
  big["hidden_size"] = ModelConfig::kMaxHiddenSize;
  big["intermediate_size"] = ModelConfig::kMaxIntermediateSize;
  big["num_hidden_layers"] = 2;
  big["num_attention_heads"] = 2;
  big["num_key_value_heads"] = 2;
  big["head_dim"] = 2;
  const ModelConfig b = ModelConfig::from_json(big, "big.json");
  const int64_t H = int64_t{1} << 20, I = int64_t{1} << 22, V = int64_t{1} << 24;
  EXPECT_EQ(b.parameter_count(), 2 * (2 * H * 4 + 2 * H * 4 + 3 * H * I + 2 * H) + 2 * V * H + H);
  // Non-finite floats are refused too.
  json inf = tiny_config();
  inf["rope_theta"] = 1e308;
  inf["rms_norm_eps"] = 0.0;
  EXPECT_NE(error_of([&] { ModelConfig::from_json(inf, "c.json"); }).find("'rms_norm_eps' must be a positive finite"),
            std::string::npos);
}

// A llama2.c model.bin header is seven int32 fields: their products overflowed 64 bits, and
// |INT32_MIN| (the vocabulary's sign marks a separate classifier) is undefined.
TEST(HostileLlama2c, HeaderProductsAreCheckedAndTheSignedMinimumRefused) {
  test::TempDir dir;
  auto header = [&](std::vector<int32_t> v) {
    const std::string path = dir / "model.bin";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(v.data()), 4 * v.size());
    return path;
  };
  const int32_t big = 1 << 30;
  EXPECT_NE(error_of([&] { read_llama2c_header(header({big, big, big, 2, 2, big, 2})); }).find("overflows a 64-bit integer"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { read_llama2c_header(header({8, 16, 1, 2, 2, INT32_MIN, 16})); }),
            dir / "model.bin" + ": header field vocab_size = -2147483648 must be positive");
  // An honest header of a missing body: the sizes it implies, named.
  EXPECT_NE(error_of([&] { read_llama2c_header(header({8, 16, 1, 2, 2, -300, 16})); }).find("truncated"),
            std::string::npos);
}

// Found by fuzz_bpe_tokenizer: a token id near 2^31 grew the id -> token table to 64 GB before any
// other check. Ids are bounded by the vocabulary limit of config.json (2^24).
TEST(HostileTokenizers, AHugeTokenIdIsRefusedBeforeTheTableGrows) {
  test::TempDir dir;
  std::ifstream in(std::string(KVLAB_TEST_DATA) + "/tokenizers/tiny_bpe/tokenizer.json");
  nlohmann::json j = nlohmann::json::parse(in);
  const std::string token = j["model"]["vocab"].begin().key();
  j["model"]["vocab"][token] = 2147483647;
  std::ofstream(dir / "tokenizer.json") << j.dump();
  EXPECT_EQ(error_of([&] { BpeTokenizer::from_file(dir / "tokenizer.json"); }),
            dir / "tokenizer.json" + ": model.vocab." + token +
                ": token id 2147483647 is beyond the limit of 16777216 ids");
  j["model"]["vocab"][token] = (1 << 24) - 1;  // the largest id allowed still loads
  std::ofstream(dir / "tokenizer.json") << j.dump();
  EXPECT_NO_THROW(BpeTokenizer::from_file(dir / "tokenizer.json"));
}

// Found by fuzz_sentencepiece: a model with a zero-length piece made libsentencepiece's
// double-array builder throw through the shim's C interface; it is one error line now.
TEST(HostileTokenizers, ASentencePieceModelWithAnEmptyPieceIsOneError) {
  test::TempDir dir;
  const unsigned char model[] = {0x0a, 0x0e, 0x0a, 0x05, 0x3c, 0x75, 0x6e, 0x6b, 0x3e, 0x15, 0x00, 0x00,
                                 0x00, 0x00, 0x18, 0x02, 0x0a, 0x0c, 0x0a, 0x03, 0x3e, 0x0e, 0xaa, 0x0a,
                                 0x05, 0x00, 0x00, 0x18, 0x02, 0x0a};
  std::ofstream(dir / "tokenizer.model", std::ios::binary).write(reinterpret_cast<const char*>(model), sizeof model);
  const std::string e = error_of([&] { SentencePieceTokenizer t(dir / "tokenizer.model"); });
  EXPECT_NE(e.find(dir / "tokenizer.model" + ": not a valid SentencePiece model ("), std::string::npos) << e;
}

// --- non-regular files (issue 19 finding 3, and every other reader) ---------------------------

TEST(NonRegularFiles, FifoAsConfigOrSafetensorsIsRefusedByName) {
  test::TempDir dir;
  make_fifo(dir / "config.json");
  EXPECT_EQ(error_of_fifo(dir / "config.json", [&] { ModelConfig::from_file(dir / "config.json"); }),
            dir / "config.json" + ": model config is a FIFO (named pipe), not a regular file");
  make_fifo(dir / "model.safetensors");
  EXPECT_EQ(error_of_fifo(dir / "model.safetensors", [&] { SafetensorsFile f(dir / "model.safetensors"); }),
            dir / "model.safetensors" + ": safetensors file is a FIFO (named pipe), not a regular file");
  EXPECT_NE(error_of_fifo(dir / "model.safetensors", [&] { SafetensorsCheckpoint c(dir.str()); }).find("FIFO"),
            std::string::npos);
}

TEST(NonRegularFiles, EveryParserRefusesAFifo) {
  test::TempDir dir;
  const std::string fifo = dir / "input";
  make_fifo(fifo);
  const std::vector<std::pair<std::string, std::function<void()>>> readers = {
      {"tokenizer.json", [&] { BpeTokenizer::from_file(fifo); }},
      {"SentencePiece model", [&] { SentencePieceTokenizer t(fifo); }},
      {"llama2.c tokenizer", [&] { Llama2cTokenizer t(fifo, 512); }},
      {"LongBench data file", [&] { longbench::load_records(fifo); }},
      {"prediction file", [&] { longbench::read_predictions(fifo); }},
      {"plan file", [&] { PlanFile::load(fifo); }},
      {"kvmix plan file", [&] { kvmix::read_plan_file(fifo); }},
      {"GGUF file", [&] { GgufFile f(fifo); }},
  };
  for (const auto& [what, read] : readers) {
    const std::string msg = error_of_fifo(fifo, read);
    EXPECT_NE(msg.find(fifo), std::string::npos) << what << ": " << msg;
    EXPECT_NE(msg.find("is a FIFO (named pipe), not a regular file"), std::string::npos) << what << ": " << msg;
  }
}

TEST(NonRegularFiles, DevicesAndDirectoriesAreRefusedByName) {
  // /dev/zero never ends: before, the safetensors reader mapped it and the JSON readers read forever.
  EXPECT_EQ(error_of([] { SafetensorsFile f("/dev/zero"); }),
            "/dev/zero: safetensors file is a character device, not a regular file");
  EXPECT_EQ(error_of([] { ModelConfig::from_file("/dev/zero"); }),
            "/dev/zero: model config is a character device, not a regular file");
  EXPECT_NE(error_of([] { longbench::load_records("/dev/zero"); }).find("character device"), std::string::npos);
  test::TempDir dir;
  std::filesystem::create_directories(dir / "tokenizer.json");
  EXPECT_EQ(error_of([&] { BpeTokenizer::from_file(dir / "tokenizer.json"); }),
            dir / "tokenizer.json" + ": tokenizer file is a directory, not a regular file");
  std::filesystem::create_directories(dir / "plan.yaml");
  EXPECT_EQ(error_of([&] { PlanFile::load(dir / "plan.yaml"); }),
            dir / "plan.yaml" + ": plan file is a directory, not a regular file");
  // A missing file keeps each reader's own words.
  EXPECT_NE(error_of([&] { ModelConfig::from_file(dir / "none.json"); }).find("cannot open model config"),
            std::string::npos);
}

TEST(NonRegularFiles, FilesReadWholeHaveASizeLimit) {
  test::TempDir dir;
  const std::string big = dir / "config.json";
  { std::ofstream(big) << "{}"; }
  ASSERT_EQ(::truncate(big.c_str(), static_cast<off_t>(kMaxJsonFileBytes + 1)), 0);  // sparse: no disk used
  EXPECT_EQ(error_of([&] { ModelConfig::from_file(big); }),
            fmt::format("{}: model config is {} bytes, above the limit of {} bytes", big, kMaxJsonFileBytes + 1,
                        kMaxJsonFileBytes));
}

TEST(NonRegularFiles, JsonLinesHaveALineLengthLimit) {
  std::istringstream in("short\n" + std::string(100, 'x') + "\nlast");
  std::string line;
  EXPECT_TRUE(getline_at_most(in, line, 100, "f.jsonl", 1));
  EXPECT_EQ(line, "short");
  EXPECT_TRUE(getline_at_most(in, line, 100, "f.jsonl", 2));
  EXPECT_EQ(line.size(), 100u);
  EXPECT_TRUE(getline_at_most(in, line, 100, "f.jsonl", 3));
  EXPECT_EQ(line, "last");
  EXPECT_FALSE(getline_at_most(in, line, 100, "f.jsonl", 4));
  std::istringstream longer(std::string(101, 'x'));
  EXPECT_EQ(error_of([&] { getline_at_most(longer, line, 100, "f.jsonl", 7); }),
            "f.jsonl:7: line is longer than the limit of 100 bytes");
  // The same lines as std::getline, blank ones and a missing final newline included.
  for (const std::string text : {"", "\n", "a\n\nb", "a\nb\n", "\n\n\n"}) {
    std::istringstream a(text), b(text);
    std::string la, lb;
    int64_t n = 0;
    for (;;) {
      const bool ga = static_cast<bool>(std::getline(a, la));
      const bool gb = getline_at_most(b, lb, 100, "t", ++n);
      ASSERT_EQ(ga, gb) << "text " << json(text).dump() << " line " << n;
      if (!ga) break;
      EXPECT_EQ(la, lb);
    }
  }
}

// Issue 21: under AddressSanitizer, dlopen refuses RTLD_DEEPBIND, so SentencePiece models could not
// be loaded at all in the sanitizer build; there the shim now gets a link-map namespace of its own.
// In every build (and under scripts/sanitize.sh in particular) a model loads and round-trips text.
TEST(SentencePieceShim, LoadsAndRoundTripsInThisBuild) {
  SentencePieceTokenizer tok(std::string(KVLAB_TEST_DATA) + "/hf_reference/llama_mha/tokenizer.model");
  EXPECT_GT(tok.vocab_size(), 259);
  const std::string text = "In the beginning God created the heaven and the earth.";
  const auto ids = tok.encode(text, true);
  ASSERT_GT(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);  // BOS
  EXPECT_EQ(tok.decode(ids, true), text);
}

}  // namespace
}  // namespace kvlab
