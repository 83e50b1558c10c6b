#pragma once
// LongBench's JSON-lines files (records, predictions), read one object per line.
#include <cstdint>
#include <functional>
#include <istream>
#include <string>

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"

namespace kvlab::longbench {

// Calls each(object, where) for every non-blank line of `in`, where = "path:line"; a line that is
// not a JSON object fails naming it. Stops early when each returns false.
inline void for_each_json_line(std::istream& in, const std::string& path,
                               const std::function<bool(const nlohmann::json&, const std::string&)>& each) {
  std::string line;
  for (int64_t n = 1; getline_at_most(in, line, kMaxJsonLineBytes, path, n); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON ({})", where, e.what());
    }
    if (!j.is_object()) fail("{}: expected a JSON object", where);
    if (!each(j, where)) return;
  }
}

}  // namespace kvlab::longbench
