#include "kvlab/eval/longbench/records.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "json_lines.h"
#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"

namespace kvlab::longbench {
namespace {

std::string text_field(const nlohmann::json& j, const char* key, const std::string& where, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail("{}: missing key '{}'", where, key);
    return "";
  }
  if (!j[key].is_string()) fail("{}: key '{}' must be a string", where, key);
  return j[key].get<std::string>();
}

std::vector<std::string> list_field(const nlohmann::json& j, const char* key, const std::string& where, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail("{}: missing key '{}'", where, key);
    return {};
  }
  if (!j[key].is_array()) fail("{}: key '{}' must be a list", where, key);
  std::vector<std::string> out;
  for (const auto& v : j[key]) {
    if (v.is_string())
      out.push_back(v.get<std::string>());
    else if (v.is_number_integer())
      out.push_back(v.dump());
    else
      fail("{}: key '{}' holds {}, expected strings", where, key, v.dump());
  }
  return out;
}

}  // namespace

std::vector<Record> load_records(const std::string& path, int64_t max_records) {
  check_input_file(path, "LongBench data file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read LongBench data file '{}'", path);
  std::vector<Record> out;
  if (max_records == 0) return out;
  for_each_json_line(in, path, [&](const nlohmann::json& j, const std::string& where) {
    Record r;
    r.input = text_field(j, "input", where, true);
    r.context = text_field(j, "context", where, true);
    r.answers = list_field(j, "answers", where, true);
    if (j.contains("length") && !j["length"].is_null()) {
      if (!j["length"].is_number_integer()) fail("{}: key 'length' must be an integer", where);
      r.length = j["length"].get<int64_t>();
    }
    r.dataset = text_field(j, "dataset", where, false);
    r.language = text_field(j, "language", where, false);
    r.all_classes = list_field(j, "all_classes", where, false);
    r.id = text_field(j, "_id", where, false);
    out.push_back(std::move(r));
    return max_records < 0 || static_cast<int64_t>(out.size()) < max_records;
  });
  return out;
}

std::string record_file(const std::string& dir, const std::string& task, bool longbench_e) {
  return (std::filesystem::path(dir) / (task + (longbench_e ? "_e" : "") + ".jsonl")).string();
}

}  // namespace kvlab::longbench
