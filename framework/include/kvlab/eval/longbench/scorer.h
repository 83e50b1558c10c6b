#pragma once
// LongBench's scorer (eval.py) over prediction files: one <task>.jsonl per task with records
// {pred, answers, all_classes, length} as the benchmark's pred.py writes them (and as
// `kvlab eval longbench --out DIR` writes them), so predictions made elsewhere score identically.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvlab/eval/longbench/task_spec.h"

namespace kvlab::longbench {

struct Prediction {
  std::string pred;
  std::vector<std::string> answers;
  std::vector<std::string> all_classes;  // empty when the record has null
  std::optional<int64_t> length;         // the source record's length field (LongBench-E buckets)
  std::string id;                        // the source record's _id, when known
};

// Reads a prediction jsonl. Errors name the file, the line and the key.
std::vector<Prediction> read_predictions(const std::string& path);
// Writes records in the same format (one JSON object a line, UTF-8 unescaped), via a temporary file
// renamed into place, so an existing file is never left half written.
void write_predictions(const std::string& path, const std::vector<Prediction>& predictions);

// LongBench-E length buckets by the record's length field: < 4000, < 8000, the rest.
constexpr std::array<const char*, 3> kLengthBuckets = {"0-4k", "4-8k", "8k+"};
int length_bucket(int64_t length);

// One record: the prediction is cut to its first line (after leading newlines) for first-line
// tasks, then scored against every answer; the best score counts.
double score_record(const TaskSpec& task, const std::string& prediction, const std::vector<std::string>& answers,
                    const std::vector<std::string>& all_classes);

struct TaskScore {
  std::string task;
  int64_t records = 0;
  double score = 0;                  // round(100 * mean, 2), as eval.py's scorer
  std::vector<double> per_record;
  bool has_lengths = false;          // every record had a length field
  std::array<double, 3> buckets{};   // scorer_e: round(100 * np.mean(bucket), 2); NaN for an empty bucket
};

// Scores a task's predictions as eval.py does; all_classes comes from the last record (eval.py
// keeps the last one read). `source` names the file in errors.
TaskScore score_task(const TaskSpec& task, const std::vector<Prediction>& predictions, const std::string& source);

// The mean of the task scores, rounded to 2 decimals (eval.py prints no average; this is ours).
double average_score(const std::vector<TaskScore>& tasks);

struct DirectoryScores {
  std::vector<TaskScore> tasks;              // sorted by task name
  double average = 0;
  std::vector<std::string> skipped;          // "<file>: <why>" for jsonl files that are not scored
};

// Every <task>.jsonl in dir (the task is the file name up to its first '.', as eval.py takes it).
// Files of tasks outside the 16 English and code tasks are skipped and listed.
DirectoryScores score_prediction_dir(const std::string& dir);

}  // namespace kvlab::longbench
