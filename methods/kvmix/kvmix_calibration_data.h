#pragma once
// Calibration prompts for the KVmix profiler, as token ids, from
//   - a plain text file: tokenized once and cut into windows of max_len tokens; `samples` windows
//     spread evenly over the file (deterministic); or
//   - a jsonl file: C4-style records ({"text": ...}) or LongBench records ({"context", "input",
//     "dataset", ...}, rendered with the task's prompt template when a dataset2prompt.json is given,
//     else "{context}\n\n{input}"); `samples` records drawn at random with `seed` (without
//     replacement); each prompt is truncated to its first max_len tokens, as the reference does.
#include <cstdint>
#include <string>
#include <vector>

namespace kvlab {
class Tokenizer;
}

namespace kvlab::kvmix {

struct CalibrationDataOptions {
  std::string path;              // .txt (any non-.jsonl file) or .jsonl
  int64_t samples = 10;          // prompts wanted
  int64_t max_len = 1024;        // tokens per prompt (BOS included when added)
  uint64_t seed = 42;            // jsonl record sampling
  bool bos = false;              // prepend the tokenizer's BOS to every prompt
  std::string templates;         // jsonl: LongBench dataset2prompt.json ("" for none)
};

struct CalibrationPrompts {
  std::vector<std::vector<int64_t>> prompts;  // token ids, each 2..max_len long
  std::string kind;                           // "text" or "jsonl"
  std::vector<std::string> sources;           // per prompt: "tokens 0..1023" or "line 17"
  int64_t available = 0;                      // windows (text) or records (jsonl) in the file
  int64_t skipped = 0;                        // drawn records shorter than 2 tokens
};

CalibrationPrompts load_calibration_prompts(const Tokenizer& tokenizer, const CalibrationDataOptions& options);

// Python-style "{name}" substitution of a LongBench template with a record's string fields; an
// unknown field is an error naming `where`. "{{" and "}}" stand for literal braces.
std::string render_template(const std::string& tmpl, const std::vector<std::pair<std::string, std::string>>& fields,
                            const std::string& where);

}  // namespace kvlab::kvmix
