// The LongBench scorer against fixtures computed by the benchmark's own Python packages
// (tests/data/longbench, made by scripts/make_longbench_fixtures.py): every record's score, every
// task's rounded score, the LongBench-E buckets, numpy's averaging and Python's / numpy's rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/metrics.h"
#include "kvlab/eval/longbench/scorer.h"
#include "test_helpers.h"

namespace kvlab::longbench {
namespace {

const std::string kFixtures = std::string(KVLAB_TEST_DATA) + "/longbench";

nlohmann::json expected() {
  std::ifstream in(kFixtures + "/expected.json");
  return nlohmann::json::parse(in);
}

TEST(LongBenchScorer, EveryRecordAndTaskMatchesThePythonScorer) {
  const auto e = expected();
  ASSERT_EQ(e["scores"].size(), 16u) << "one fixture file per English/code task";
  for (const auto& [task, want_records] : e["records"].items()) {
    SCOPED_TRACE(task);
    const std::string path = kFixtures + "/preds/" + task + ".jsonl";
    const TaskScore s = score_task(find_task(task), read_predictions(path), path);
    ASSERT_EQ(s.per_record.size(), want_records.size());
    for (size_t i = 0; i < s.per_record.size(); ++i)
      EXPECT_DOUBLE_EQ(s.per_record[i], want_records[i].get<double>()) << "record " << i + 1;
    EXPECT_EQ(s.score, e["scores"][task].get<double>());  // rounded to 2 decimals: exactly equal
    ASSERT_TRUE(s.has_lengths);
    for (size_t b = 0; b < 3; ++b) {
      const auto& want = e["scores_e"][task][kLengthBuckets[b]];
      if (want.is_null())
        EXPECT_TRUE(std::isnan(s.buckets[b])) << kLengthBuckets[b];
      else
        EXPECT_EQ(s.buckets[b], want.get<double>()) << kLengthBuckets[b];
    }
  }
}

TEST(LongBenchScorer, DirectoryScoresEveryTaskAndTheAverage) {
  const auto e = expected();
  const DirectoryScores d = score_prediction_dir(kFixtures + "/preds");
  ASSERT_EQ(d.tasks.size(), 16u);
  EXPECT_TRUE(d.skipped.empty());
  for (const auto& t : d.tasks) EXPECT_EQ(t.score, e["scores"][t.task].get<double>()) << t.task;
  EXPECT_EQ(d.average, e["average"].get<double>());
  EXPECT_TRUE(std::is_sorted(d.tasks.begin(), d.tasks.end(),
                             [](const TaskScore& a, const TaskScore& b) { return a.task < b.task; }));
}

TEST(LongBenchScorer, RecursionLimitOfTheRougePackageMatchesTheMeasuredOne) {
  EXPECT_EQ(kRougeMaxReconCalls, expected()["rouge_max_recon_calls"].get<int>());
}

TEST(LongBenchScorer, NumpyMeanSumsPairwise) {
  const auto e = expected();  // named: a range over a member of a temporary would dangle
  for (const auto& c : e["numpy_mean_cases"]) {
    const auto values = c["values"].get<std::vector<double>>();
    EXPECT_EQ(numpy_mean(values), c["mean"].get<double>()) << values.size() << " values";
  }
  EXPECT_TRUE(std::isnan(numpy_mean({})));
  EXPECT_EQ(numpy_mean({0.5, 0.25}), 0.375);
}

TEST(LongBenchScorer, RoundingAsPythonAndNumpy) {
  const auto e = expected();
  for (const auto& c : e["round_cases"]) {
    const double x = c["x"].get<double>();
    EXPECT_EQ(python_round(x, 2), c["python"].get<double>()) << x;
    EXPECT_EQ(numpy_round(x, 2), c["numpy"].get<double>()) << x;
  }
  EXPECT_EQ(python_round(0.125, 2), 0.12);  // exact tie: to even
  EXPECT_EQ(python_round(0.375, 2), 0.38);
  EXPECT_EQ(python_round(2.675, 2), 2.67);  // stored as 2.67499...
}

TEST(LongBenchScorer, BadFilesNameTheFileLineAndKey) {
  test::TempDir tmp;
  auto expect_error = [&](const std::string& content, const std::string& needle) {
    std::ofstream(tmp / "trec.jsonl") << content;
    try {
      read_predictions(tmp / "trec.jsonl");
      ADD_FAILURE() << "no error for " << content;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{\"pred\": \"x\", \"answers\": [\"a\"]}\n{\"pred\": 3, \"answers\": []}\n", "trec.jsonl:2: key 'pred'");
  expect_error("{\"pred\": \"x\"}\n", "missing key 'answers'");
  expect_error("{\"pred\": \"x\", \"answers\": \"a\"}\n", "'answers' must be a list");
  expect_error("not json\n", "trec.jsonl:1: not valid JSON");

  // A retrieval answer without "Paragraph N" fails as the benchmark does, naming the record.
  std::ofstream(tmp / "r.jsonl") << "{\"pred\": \"1\", \"answers\": [\"Paragraph 1\"]}\n"
                                  << "{\"pred\": \"1\", \"answers\": [\"one\"]}\n";
  try {
    score_task(find_task("passage_retrieval_en"), read_predictions(tmp / "r.jsonl"), "r.jsonl");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("r.jsonl: record 2"), std::string::npos) << e.what();
  }
}

TEST(LongBenchScorer, DirectorySkipsChineseTasksAndWrittenFilesReadBack) {
  test::TempDir tmp;
  std::vector<Prediction> preds = {{"Paris\nLondon", {"Paris"}, {}, 3000, "id-1"},
                                   {"caf\xc3\xa9", {"Rome"}, {}, 9000, ""}};
  write_predictions(tmp / "triviaqa.jsonl", preds);
  std::ofstream(tmp / "lsht.jsonl") << "{\"pred\": \"x\", \"answers\": [\"y\"]}\n";
  std::ofstream(tmp / "notes.txt") << "ignored";
  const auto back = read_predictions(tmp / "triviaqa.jsonl");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].pred, preds[0].pred);
  EXPECT_EQ(back[0].id, "id-1");
  EXPECT_EQ(*back[1].length, 9000);
  EXPECT_EQ(back[1].pred, "caf\xc3\xa9");
  const DirectoryScores d = score_prediction_dir(tmp.str());
  ASSERT_EQ(d.tasks.size(), 1u);
  EXPECT_EQ(d.tasks[0].score, 50.0);  // first line "Paris" matches; "café" does not
  EXPECT_EQ(d.tasks[0].buckets[0], 100.0);
  EXPECT_TRUE(std::isnan(d.tasks[0].buckets[1]));
  EXPECT_EQ(d.tasks[0].buckets[2], 0.0);
  ASSERT_EQ(d.skipped.size(), 1u);
  EXPECT_NE(d.skipped[0].find("lsht.jsonl"), std::string::npos);
  EXPECT_NE(d.skipped[0].find("jieba"), std::string::npos);
}

}  // namespace
}  // namespace kvlab::longbench
