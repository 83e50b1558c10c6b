#pragma once
// LongBench (v1) data records: one JSON object a line in <task>.jsonl (LongBench-E: <task>_e.jsonl)
// with the fields input, context, answers, length, dataset, language, all_classes and _id, as the
// benchmark's release (THUDM/LongBench data.zip) has them. The user points to the directory.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvlab::longbench {

struct Record {
  std::string input;                     // the question / query (may be empty: summaries)
  std::string context;                   // the long document(s)
  std::vector<std::string> answers;
  std::optional<int64_t> length;         // the benchmark's length of the record (words; chars for zh)
  std::string dataset, language;
  std::vector<std::string> all_classes;  // trec / lsht: the label set; empty when null
  std::string id;                        // _id ("" when the file has none)
};

// Reads at most max_records records (all when < 0). Errors name the file, line and key.
std::vector<Record> load_records(const std::string& path, int64_t max_records = -1);

// <dir>/<task>.jsonl, or <dir>/<task>_e.jsonl for LongBench-E.
std::string record_file(const std::string& dir, const std::string& task, bool longbench_e);

}  // namespace kvlab::longbench
