// The kvlab command end to end: make-model -> eval ppl -> generate, and its error behaviour
// (one line on stderr, non-zero exit).
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "test_helpers.h"

namespace kvlab {
namespace {

struct CliRun {
  int code;
  std::string out;  // stdout
  std::string err;  // stderr
};

CliRun run_kvlab(const std::string& args, const test::TempDir& tmp) {
  const std::string err_path = tmp / "stderr.txt";
  const std::string cmd = std::string(KVLAB_BINARY) + " " + args + " 2>" + err_path;
  CliRun r{};
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_path);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  return r;
}

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

void expect_one_line_error(const CliRun& r, const std::string& needle) {
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

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

}  // namespace
}  // namespace kvlab
