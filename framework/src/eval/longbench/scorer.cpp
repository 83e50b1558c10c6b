#include "kvlab/eval/longbench/scorer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "json_lines.h"
#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/eval/longbench/metrics.h"

namespace kvlab::longbench {
namespace fs = std::filesystem;
namespace {

// Answers and classes are strings in the benchmark's files; a number is taken as Python's str() of it.
std::string as_text(const nlohmann::json& v, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.dump();
  fail("{}: expected a string, got {}", where, v.dump());
}

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& key, const std::string& where,
                                     bool nullable) {
  if (!j.contains(key)) fail("{}: missing key '{}'", where, key);
  const auto& v = j.at(key);
  if (v.is_null() && nullable) return {};
  if (!v.is_array()) fail("{}: key '{}' must be a list{}", where, key, nullable ? " or null" : "");
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) out.push_back(as_text(v[i], where + " key '" + key + "'"));
  return out;
}

// First line after stripping leading newlines: prediction.lstrip('\n').split('\n')[0].
std::string first_line(const std::string& s) {
  const size_t start = s.find_first_not_of('\n');
  if (start == std::string::npos) return "";
  const size_t end = s.find('\n', start);
  return s.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

double metric_value(const TaskSpec& task, const std::string& prediction, const std::string& truth,
                    const std::vector<std::string>& all_classes) {
  switch (task.metric) {
    case Metric::QaF1: return qa_f1_score(prediction, truth);
    case Metric::RougeL: return rouge_score(prediction, truth);
    case Metric::Classification: return classification_score(prediction, truth, all_classes);
    case Metric::Retrieval: return retrieval_score(prediction, truth);
    case Metric::Count: return count_score(prediction, truth);
    case Metric::CodeSim: return code_sim_score(prediction, truth);
  }
  return 0.0;
}

}  // namespace

std::vector<Prediction> read_predictions(const std::string& path) {
  check_input_file(path, "prediction file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read prediction file '{}'", path);
  std::vector<Prediction> out;
  for_each_json_line(in, path, [&](const nlohmann::json& j, const std::string& where) {
    Prediction p;
    if (!j.contains("pred") || !j["pred"].is_string()) fail("{}: key 'pred' must be a string", where);
    p.pred = j["pred"].get<std::string>();
    p.answers = string_list(j, "answers", where, false);
    p.all_classes = j.contains("all_classes") ? string_list(j, "all_classes", where, true) : std::vector<std::string>{};
    if (j.contains("length")) {
      if (!j["length"].is_number_integer()) fail("{}: key 'length' must be an integer", where);
      p.length = j["length"].get<int64_t>();
    }
    if (j.contains("_id") && j["_id"].is_string()) p.id = j["_id"].get<std::string>();
    out.push_back(std::move(p));
    return true;
  });
  return out;
}

void write_predictions(const std::string& path, const std::vector<Prediction>& predictions) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot write prediction file '{}'", tmp);
    for (const auto& p : predictions) {
      nlohmann::json j = {{"pred", p.pred}, {"answers", p.answers}};
      j["all_classes"] = p.all_classes.empty() ? nlohmann::json(nullptr) : nlohmann::json(p.all_classes);
      if (p.length) j["length"] = *p.length;
      if (!p.id.empty()) j["_id"] = p.id;
      // Generated text may end inside a multi-byte character: replace invalid bytes, never throw.
      out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    if (!out) fail("writing prediction file '{}' failed", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail("cannot move '{}' to '{}': {}", tmp, path, ec.message());
}

int length_bucket(int64_t length) { return length < 4000 ? 0 : length < 8000 ? 1 : 2; }

double score_record(const TaskSpec& task, const std::string& prediction, const std::vector<std::string>& answers,
                    const std::vector<std::string>& all_classes) {
  const std::string pred = task.first_line ? first_line(prediction) : prediction;
  double best = 0.0;
  for (const auto& truth : answers) best = std::max(best, metric_value(task, pred, truth, all_classes));
  return best;
}

TaskScore score_task(const TaskSpec& task, const std::vector<Prediction>& predictions, const std::string& source) {
  if (predictions.empty()) fail("{}: no prediction records to score", source);
  TaskScore r;
  r.task = task.name;
  r.records = static_cast<int64_t>(predictions.size());
  const auto& all_classes = predictions.back().all_classes;
  if (task.metric == Metric::Classification && all_classes.empty())
    fail("{}: task {} needs all_classes (the last record has none)", source, task.name);
  r.has_lengths = true;
  std::array<std::vector<double>, 3> buckets;
  double total = 0.0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    const Prediction& p = predictions[i];
    double s;
    try {
      s = score_record(task, p.pred, p.answers, all_classes);
    } catch (const Error& e) {
      fail("{}: record {}: {}", source, i + 1, e.what());
    }
    r.per_record.push_back(s);
    total += s;
    if (p.length)
      buckets[static_cast<size_t>(length_bucket(*p.length))].push_back(s);
    else
      r.has_lengths = false;
  }
  r.score = python_round(100 * total / static_cast<double>(predictions.size()), 2);
  for (size_t b = 0; b < 3; ++b)
    r.buckets[b] = r.has_lengths && !buckets[b].empty() ? numpy_round(100 * numpy_mean(buckets[b]), 2)
                                                        : std::numeric_limits<double>::quiet_NaN();
  return r;
}

double average_score(const std::vector<TaskScore>& tasks) {
  if (tasks.empty()) return std::numeric_limits<double>::quiet_NaN();
  double sum = 0.0;
  for (const auto& t : tasks) sum += t.score;
  return python_round(sum / static_cast<double>(tasks.size()), 2);
}

DirectoryScores score_prediction_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) fail("prediction directory '{}' does not exist", dir);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().extension() == ".jsonl") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  DirectoryScores out;
  for (const auto& f : files) {
    const std::string file = f.filename().string();
    const std::string task = file.substr(0, file.find('.'));
    if (!is_known_task(task)) {
      try {
        find_task(task);
      } catch (const Error& e) {
        out.skipped.push_back(file + ": " + e.what());
      }
      continue;
    }
    out.tasks.push_back(score_task(find_task(task), read_predictions(f.string()), f.string()));
  }
  if (out.tasks.empty())
    fail("no prediction files of the LongBench English/code tasks (<task>.jsonl) in '{}'", dir);
  std::sort(out.tasks.begin(), out.tasks.end(), [](const TaskScore& a, const TaskScore& b) { return a.task < b.task; });
  out.average = average_score(out.tasks);
  return out;
}

}  // namespace kvlab::longbench
