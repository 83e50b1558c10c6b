// The kvlab command for LongBench and passkey: `longbench score` prints the fixtures' scores,
// `eval longbench --out` writes predictions that `longbench score` scores identically, `eval
// passkey` sweeps lengths x depths; errors are one line and a non-zero exit.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_run.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using test::CliRun;
using test::expect_one_line_error;

CliRun kvlab(const std::string& args, const test::TempDir& tmp) { return test::run_kvlab(args, tmp / "stderr.txt"); }

const std::string kFixtures = std::string(KVLAB_TEST_DATA) + "/longbench";

class LongBenchCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    const CliRun r = kvlab("make-model --shape tiny --out " + *tmp_ / "tiny" + " --seed 3", *tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    std::filesystem::create_directories(*tmp_ / "data");
    std::ofstream trec(*tmp_ / "data/trec.jsonl");
    for (const char* q : {"Where is Rome?", "Who wrote it?", "What is the longest river?"})
      trec << R"({"input": "Question: )" << q << R"(\nType:", "context": "Question: Where is Oslo?\nType: City", )"
           << R"("answers": ["City"], "all_classes": ["City", "Date"], "length": 3000})" << "\n";
    std::ofstream qa(*tmp_ / "data/hotpotqa.jsonl");
    qa << R"({"input": "Who?", "context": "Passage 1: the river runs.", "answers": ["the river"], "length": 5000})"
       << "\n";
  }
  static void TearDownTestSuite() { delete tmp_; }
  static std::string model() { return *tmp_ / "tiny"; }
  static test::TempDir* tmp_;
};
test::TempDir* LongBenchCli::tmp_ = nullptr;

TEST(LongBenchScoreCli, PrintsTheFixtureScores) {
  test::TempDir tmp;
  std::ifstream in(kFixtures + "/expected.json");
  const auto e = nlohmann::json::parse(in);
  CliRun r = kvlab("longbench score " + kFixtures + "/preds --json", tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  for (const auto& [task, score] : e["scores"].items()) EXPECT_EQ(j[task].get<double>(), score.get<double>()) << task;
  EXPECT_EQ(j["average"].get<double>(), e["average"].get<double>());

  r = kvlab("longbench score " + kFixtures + "/preds --e --json", tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  for (const auto& [task, buckets] : e["scores_e"].items()) EXPECT_EQ(j[task], buckets) << task;

  r = kvlab("longbench score " + kFixtures + "/preds", tmp);  // the table
  ASSERT_EQ(r.code, 0) << r.err;
  const size_t row = r.out.find("\npassage_count ");
  ASSERT_NE(row, std::string::npos) << r.out;
  const std::string line = r.out.substr(row + 1, r.out.find('\n', row + 1) - row - 1);
  EXPECT_EQ(line.substr(line.size() - 12), " 25     2.12") << line;
  EXPECT_NE(r.out.find("average"), std::string::npos);
}

// Negative lengths and counts are refused before any work, naming the flag (a negative
// --max-length used to mean "the default" silently, a negative --max-new generated nothing).
TEST_F(LongBenchCli, NegativeLengthsAreRefused) {
  const std::string eval = "eval longbench --threads 1 --model " + model() + " --data " + *tmp_ / "data" + " --tasks trec ";
  expect_one_line_error(kvlab(eval + "--max-length -5", *tmp_), "--max-length -5");
  expect_one_line_error(kvlab(eval + "--max-new -1", *tmp_), "--max-new -1");
  expect_one_line_error(kvlab(eval + "--batch 0", *tmp_), "--batch 0");
  const std::string passkey = "eval passkey --threads 1 --model " + model() + " --lengths 64 --depths 0 ";
  expect_one_line_error(kvlab(passkey + "--max-new -3", *tmp_), "--max-new -3");
  expect_one_line_error(kvlab(passkey + "--samples -1", *tmp_), "--samples -1");
}

TEST_F(LongBenchCli, EvalWritesPredictionsThatScoreIdentically) {
  const std::string preds = *tmp_ / "preds";
  CliRun r = kvlab("eval longbench --threads 1 --model " + model() + " --data " + *tmp_ / "data" +
                    " --tasks trec,hotpotqa --max-new 3 --method kivi --set group=8 --set residual=16 --out " + preds +
                    " --json",
                *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("eval longbench kivi"), std::string::npos) << "no progress line: " << r.err;
  const auto eval = nlohmann::json::parse(r.out);
  EXPECT_EQ(eval["tasks"]["trec"]["records"], 3);
  EXPECT_EQ(eval["chat_template"], "none");  // make-model writes no chat template
  EXPECT_GT(eval["bits_k"].get<double>(), 2.0);
  EXPECT_LT(eval["bits_k"].get<double>(), 16.0);

  r = kvlab("longbench score " + preds + " --json", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto scored = nlohmann::json::parse(r.out);
  EXPECT_EQ(scored["trec"], eval["tasks"]["trec"]["score"]);
  EXPECT_EQ(scored["hotpotqa"], eval["tasks"]["hotpotqa"]["score"]);
  EXPECT_EQ(scored["average"], eval["average"]);
}

TEST_F(LongBenchCli, PasskeySweepsLengthsAndDepths) {
  CliRun r = kvlab("eval passkey --threads 1 --model " + model() + " --lengths 160,192 --depths 0,1 --samples 2 --max-new 3 --json", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(lines, line)) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0]["context_length"], 160);
  EXPECT_EQ(rows[3]["context_length"], 192);
  EXPECT_EQ(rows[3]["depth"], 1.0);
  EXPECT_EQ(rows[3]["realised_depth"], 1.0);
  EXPECT_EQ(rows[0]["answers"].size(), 2u);
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;

  r = kvlab("eval needle --threads 1 --model " + model() + " --lengths 192 --depths 0.5 --samples 1 --max-new 2", *tmp_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("needle retrieval"), std::string::npos) << r.out;
}

TEST(LongBenchScoreCli, ErrorsAreOneLine) {
  test::TempDir tmp;
  expect_one_line_error(kvlab("longbench score " + tmp / "missing", tmp), "does not exist");
  expect_one_line_error(kvlab("longbench rescore x", tmp), "unknown longbench action 'rescore'");
}

TEST_F(LongBenchCli, EvalErrorsAreOneLine) {
  expect_one_line_error(
      kvlab("eval longbench --threads 1 --model " + model() + " --data " + *tmp_ / "data" + " --tasks trec,qmsums", *tmp_),
      "unknown LongBench task 'qmsums' (did you mean 'qmsum'?");
  expect_one_line_error(
      kvlab("eval longbench --threads 1 --model " + model() + " --data " + *tmp_ / "data" + " --tasks qmsum", *tmp_),
      "qmsum.jsonl");
  expect_one_line_error(kvlab("eval passkey --threads 1 --model " + model() + " --lengths 20 --samples 1", *tmp_),
                        "context_length 20 is too short");
}

}  // namespace
}  // namespace kvlab
