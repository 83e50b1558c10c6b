#pragma once
// What LongBench (v1) defines per task, for its 16 English and code tasks: the prompt template
// (config/dataset2prompt.json), the maximum generation length (config/dataset2maxlen.json), whether
// pred.py wraps the prompt in the model's chat template, the metric, whether the prediction is cut
// to its first line before scoring, and whether the task is part of LongBench-E. Facts of the
// benchmark (MIT), embedded so that no download is needed; a test checks them against the official
// files when ../shared has them.
#include <cstdint>
#include <string>
#include <vector>

namespace kvlab::longbench {

enum class Metric { QaF1, RougeL, Classification, Retrieval, Count, CodeSim };
std::string metric_name(Metric m);  // "qa_f1", "rouge_l", ...

struct TaskSpec {
  std::string name;            // dataset name, also the jsonl file name
  int64_t max_new_tokens;      // greedy generation length
  Metric metric;
  bool chat;                   // pred.py applies the chat template (not for trec, triviaqa, samsum, lcc, repobench-p)
  bool first_line;             // scored on the first line only (trec, triviaqa, samsum)
  bool in_e;                   // one of the 13 LongBench-E tasks
  std::string prompt;          // template; {context} and {input} are filled as str.format does
};

// The 16 tasks in the benchmark's order.
const std::vector<TaskSpec>& english_tasks();
std::vector<std::string> english_task_names();
std::vector<std::string> e_task_names();       // the 13 LongBench-E tasks
// Throws kvlab::Error naming the task and the valid names (and says so for the Chinese tasks).
const TaskSpec& find_task(const std::string& name);
bool is_known_task(const std::string& name);

// Expands a task list: "all" (the 16), "e" (the 13 LongBench-E tasks) or comma-separated names.
std::vector<std::string> expand_task_list(const std::string& list);

}  // namespace kvlab::longbench
