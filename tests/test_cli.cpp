// The kvlab command end to end: make-model -> eval ppl -> generate, and its error behaviour
// (one line on stderr, non-zero exit).
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <sched.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "kvlab/model/dtype.h"
#include "kvlab/tokenizer/sentencepiece_tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using test::CliRun;

CliRun run_kvlab(const std::string& args, const test::TempDir& tmp) { return test::run_kvlab(args, tmp / "stderr.txt"); }

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    CliRun r = run_kvlab("make-model --shape tiny --out " + *tmp_ / "tiny" + " --seed 3", *tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete tmp_; }
  static std::string model() { return *tmp_ / "tiny"; }
  static test::TempDir* tmp_;
};
test::TempDir* Cli::tmp_ = nullptr;

TEST_F(Cli, MakeModelWritesACompleteCheckpoint) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    EXPECT_TRUE(std::filesystem::exists(model() + "/" + f)) << f;
}

TEST_F(Cli, EvalPplOfARandomModelIsNearVocabularySize) {
  const std::string text = std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt";
  CliRun r = run_kvlab("eval ppl --model " + model() + " --text " + text + " --ctx 64 --max-windows 4 --json", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  // Random weights with std 0.02 give near-uniform next-token distributions: ppl ~ vocab (512).
  EXPECT_NEAR(j["ppl"].get<double>(), 512, 40);
  EXPECT_EQ(j["windows"].get<int>(), 4);
  EXPECT_EQ(j["predicted_tokens"].get<int>(), 4 * 63);
  EXPECT_NE(r.err.find("eval ppl"), std::string::npos) << "no progress line: " << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
}

TEST_F(Cli, GenerateReportsTokensPerSecond) {
  CliRun r = run_kvlab("generate --model " + model() + " --prompt 'The river' --max-new 8 --ignore-eos --ids", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("ids:"), std::string::npos);
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
}

using test::expect_one_line_error;

TEST_F(Cli, ErrorsAreOneLine) {
  expect_one_line_error(run_kvlab("eval ppl --model /nonexistent/dir --text /dev/null", *tmp_), "/nonexistent/dir");
  expect_one_line_error(run_kvlab("eval ppl --model " + model() + " --text /nonexistent.txt", *tmp_), "/nonexistent.txt");
  expect_one_line_error(run_kvlab("eval ppl --model " + model() + " --text /dev/null --bogus 1", *tmp_), "bogus");
  expect_one_line_error(run_kvlab("eval ppl --model " + model() + " --text /dev/null --dtype fp13", *tmp_), "fp13");
  expect_one_line_error(run_kvlab("frobnicate", *tmp_), "frobnicate");
  expect_one_line_error(run_kvlab("make-model --shape llama9 --out " + *tmp_ / "x", *tmp_), "llama9");
  // A checkpoint whose weights file is cut short.
  const std::string broken = *tmp_ / "broken";
  std::filesystem::create_directories(broken);
  std::filesystem::copy_file(model() + "/config.json", broken + "/config.json");
  std::filesystem::copy_file(model() + "/tokenizer.model", broken + "/tokenizer.model");
  {
    std::ifstream in(model() + "/model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream out(broken + "/model.safetensors", std::ios::binary);
    out << bytes.substr(0, bytes.size() / 2);
  }
  expect_one_line_error(run_kvlab("eval ppl --model " + broken + " --text /dev/null", *tmp_), "model.safetensors");
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// make-model never writes over another checkpoint by accident: a non-empty --out is refused (its
// files untouched) unless --force; an empty folder is fine.
TEST_F(Cli, MakeModelRefusesANonEmptyFolderWithoutForce) {
  const std::string weights = file_bytes(model() + "/model.safetensors");
  expect_one_line_error(run_kvlab("make-model --shape tiny --seed 4 --out " + model(), *tmp_), model() + ": the folder is not empty");
  EXPECT_EQ(file_bytes(model() + "/model.safetensors"), weights);

  const std::string other = *tmp_ / "notes";
  std::filesystem::create_directories(other);
  std::ofstream(other + "/README.md") << "my notes";
  expect_one_line_error(run_kvlab("make-model --shape tiny --out " + other, *tmp_), "--force");
  EXPECT_FALSE(std::filesystem::exists(other + "/config.json"));
  EXPECT_EQ(file_bytes(other + "/README.md"), "my notes");
  std::ofstream(*tmp_ / "a-file") << "x";
  expect_one_line_error(run_kvlab("make-model --shape tiny --out " + *tmp_ / "a-file", *tmp_), "not a directory");

  CliRun r = run_kvlab("make-model --shape tiny --seed 4 --out " + other + " --force", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(other + "/model.safetensors"));
  EXPECT_EQ(file_bytes(other + "/README.md"), "my notes");
  std::filesystem::create_directories(*tmp_ / "empty");
  r = run_kvlab("make-model --shape tiny --out " + *tmp_ / "empty", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
}

// SentencePiece takes its options as one string split at spaces (and its input list at commas):
// a checkpoint folder or training text holding either used to fail ("unknown field name").
TEST_F(Cli, MakeModelTrainsItsTokenizerInAFolderWithSpacesAndCommas) {
  const std::string out = *tmp_ / "a model, with spaces";
  const std::string text = *tmp_ / "training text, 1.txt";
  std::filesystem::copy_file(std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt", text);
  CliRun r = run_kvlab("make-model --shape tiny --out '" + out + "' --tokenizer-text '" + text + "'", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  // The same text gives the same tokenizer (its file records the paths it was trained with).
  const SentencePieceTokenizer made(out + "/tokenizer.model"), reference(model() + "/tokenizer.model");
  const std::string sample = "In the beginning, 1234 sheep; \xc3\xa9t\xc3\xa9 \xe2\x9c\x93.";
  EXPECT_EQ(made.vocab_size(), reference.vocab_size());
  EXPECT_EQ(made.encode(sample, true), reference.encode(sample, true));
}

// --threads beyond the cores this process may use is capped there, saying so in one line on stderr
// (LibTorch would otherwise start them all and spin); a negative count is an error.
TEST_F(Cli, ThreadsAreCappedAtTheAvailableCores) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const std::string cores = std::to_string(CPU_COUNT(&set));
  const std::string text = std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt";
  const std::string eval = "eval ppl --model " + model() + " --text " + text + " --ctx 32 --max-windows 1 --json";
  CliRun r = run_kvlab(eval + " --threads 1000", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("--threads 1000 exceeds the " + cores + " cores available; using " + cores + "\n"),
            std::string::npos)
      << r.err;
  r = run_kvlab(eval + " --threads 1", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("cores available"), std::string::npos) << r.err;
  expect_one_line_error(run_kvlab(eval + " --threads -2", *tmp_), "--threads -2");

  const int before = at::get_num_threads();
  set_threads(1000);
  EXPECT_EQ(at::get_num_threads(), CPU_COUNT(&set));
  set_threads(before);
}

// A directory where a file is expected is a one-line error naming it (the YAML readers said only
// "basic_filebuf::underflow error reading the file: Is a directory"; a text file that is a directory
// read as empty).
TEST_F(Cli, ADirectoryGivenAsAFileIsNamed) {
  const std::string d = *tmp_ / "a-folder";
  std::filesystem::create_directories(d);
  const std::string text = std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt";
  const std::string eval = "eval ppl --model " + model() + " --text " + text + " --ctx 16 --max-windows 1";
  for (const std::string& args :
       {"eval ppl --model " + model() + " --text " + d + " --ctx 16", eval + " --method kvtuner --set plan=" + d,
        eval + " --method kvmix --set plan=" + d, eval + " --method mixkvq --set plan=" + d, "run " + d + " --dry-run",
        "train --config " + d + " --text " + text + " --out " + *tmp_ / "trained",
        "eval needle --model " + model() + " --lengths 64 --depths 0 --samples 1 --haystack " + d})
    expect_one_line_error(run_kvlab(args, *tmp_), d);
}

// The calibration steps through the command line: options derived from their parameters, a plan
// written and passed back to eval ppl, and bad options as one-line errors.
TEST_F(Cli, KvTunerSearchAndMixKvqProfile) {
  const std::string text = std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt";
  const std::string common = " --model " + model() + " --calib " + text + " --samples 2 --max-len 32 --quiet";
  CliRun r = run_kvlab("search kvtuner" + common + " --pairs K4V4,K2V2 --group 16 --residual 16 --target-bits 3 --out " +
                           *tmp_ / "kvt",
                       *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("search space: 16 combinations"), std::string::npos) << r.out;  // 2 pairs ^ 4 layers
  EXPECT_NE(r.out.find("wrote " + *tmp_ / "kvt/plan.yaml"), std::string::npos) << r.out;
  r = run_kvlab("eval ppl --model " + model() + " --text " + text + " --ctx 32 --max-windows 2 --json --method kvtuner" +
                    " --set plan=" + *tmp_ / "kvt/plan.yaml",
                *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["method"], "kvtuner");
  EXPECT_EQ(j["params"]["group"], 16);  // from the plan

  r = run_kvlab("profile mixkvq" + common + " --fraction 0.125 --group 16 --out " + *tmp_ / "mix.yaml", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  r = run_kvlab("eval ppl --model " + model() + " --text " + text + " --ctx 32 --max-windows 2 --json --method mixkvq" +
                    " --set plan=" + *tmp_ / "mix.yaml" + " --set residual=16",
                *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["cache_bytes"].get<int>(), 0);

  expect_one_line_error(run_kvlab("search kvtuner" + common + " --pairs K5V4 --out " + *tmp_ / "bad", *tmp_), "--pairs");
  expect_one_line_error(run_kvlab("profile mixkvq" + common + " --fraction 2 --out " + *tmp_ / "m2.yaml", *tmp_),
                        "fraction");
  expect_one_line_error(run_kvlab("eval ppl --model " + model() + " --text " + text + " --method kvtuner --set plan=" +
                                      *tmp_ / "absent.yaml",
                                  *tmp_),
                        "absent.yaml");
}

}  // namespace
}  // namespace kvlab
