#include "kvlab/results/results_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"

namespace kvlab {
namespace {

const std::vector<std::string> kColumns = {"experiment", "model", "task", "method", "cell", "slug", "seed"};

std::string text_of(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

const nlohmann::json* param_of(const CellRecord& c, const std::string& section, const std::string& name) {
  const nlohmann::json* node = nullptr;
  if (section == "calibration") {
    if (c.config.contains("method") && c.config["method"].contains("calibration"))
      node = &c.config["method"]["calibration"]["params"];
  } else if (c.config.contains(section)) {
    node = &c.config[section]["params"];
  }
  if (!node || !node->is_object() || !node->contains(name)) return nullptr;
  return &(*node)[name];
}

// The sections a key refers to: "method.bits" -> {method}, "bits" -> all three.
std::pair<std::vector<std::string>, std::string> split_key(const std::string& key) {
  for (const char* s : {"method", "task", "calibration"}) {
    const std::string prefix = std::string(s) + ".";
    if (key.rfind(prefix, 0) == 0) return {{s}, key.substr(prefix.size())};
  }
  return {{"method", "task", "calibration"}, key};
}

}  // namespace

CellFilter::CellFilter(const std::vector<std::string>& conditions) {
  for (const auto& c : conditions) {
    const auto eq = c.find('=');
    if (eq == std::string::npos || eq == 0) fail("--where '{}': expected key=value (e.g. method=kivi)", c);
    conditions_.push_back({c.substr(0, eq), c.substr(eq + 1)});
  }
}

bool CellFilter::matches(const CellRecord& c) const {
  for (const auto& [key, value] : conditions_) {
    bool ok = false;
    if (key == "experiment") ok = c.experiment == value;
    else if (key == "model") ok = c.model == value;
    else if (key == "task") ok = c.task == value;
    else if (key == "method") ok = c.method == value;
    else if (key == "cell") ok = c.cell_id.rfind(value, 0) == 0;
    else if (key == "slug") ok = c.slug.find(value) != std::string::npos;
    else if (key == "seed") ok = c.config.contains("seed") && text_of(c.config["seed"]) == value;
    else {
      const auto [sections, name] = split_key(key);
      for (const auto& s : sections)
        if (const auto* v = param_of(c, s, name)) ok = ok || text_of(*v) == value;
    }
    if (!ok) return false;
  }
  return true;
}

void CellFilter::check_keys(const std::vector<CellRecord>& cells) const {
  for (const auto& [key, value] : conditions_) {
    if (std::find(kColumns.begin(), kColumns.end(), key) != kColumns.end()) continue;
    const auto [sections, name] = split_key(key);
    std::set<std::string> params;
    bool found = false;
    for (const auto& c : cells)
      for (const auto& s : sections) {
        found = found || param_of(c, s, name) != nullptr;
        for (const char* sec : {"method", "task"})
          if (c.config.contains(sec) && c.config[sec].contains("params"))
            for (const auto& [k, v] : c.config[sec]["params"].items()) params.insert(k);
      }
    if (!found) {
      std::vector<std::string> valid = kColumns;
      valid.insert(valid.end(), params.begin(), params.end());
      fail("--where '{}={}': no column or parameter '{}' in the store{} (valid: {})", key, value, key,
           did_you_mean(key, valid), join(valid));
    }
  }
}

std::vector<CellRecord> CellFilter::apply(const std::vector<CellRecord>& cells) const {
  std::vector<CellRecord> out;
  for (const auto& c : cells)
    if (matches(c)) out.push_back(c);
  return out;
}

std::string format_results_table(const std::vector<CellRecord>& cells, const std::vector<std::string>& wanted) {
  const auto present = metric_names(cells);
  std::vector<std::string> metrics = wanted.empty() ? present : wanted;
  for (const auto& m : wanted)
    if (std::find(present.begin(), present.end(), m) == present.end())
      fail("--metric '{}': no such metric in the selected cells{} (present: {})", m, did_you_mean(m, present),
           present.empty() ? "none" : join(present));

  std::vector<std::string> header = {"cell", "slug", "K bits", "V bits", "memory"};
  for (const auto& m : metrics) header.push_back(m);
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : cells) {
    std::vector<std::string> row = {c.cell_id.substr(0, 8), c.slug, fmt::format("{:.3f}", c.bits_k),
                                    fmt::format("{:.3f}", c.bits_v), fmt::format("{:.4f}", c.memory_ratio)};
    for (const auto& m : metrics) {
      auto it = c.metrics.find(m);
      row.push_back(it == c.metrics.end() ? "-" : fmt::format("{:.5g}", it->second));
    }
    rows.push_back(std::move(row));
  }
  std::vector<size_t> width(header.size());
  for (size_t j = 0; j < header.size(); ++j) {
    width[j] = header[j].size();
    for (const auto& r : rows) width[j] = std::max(width[j], r[j].size());
  }
  // Text columns (cell, slug) left-aligned, numbers right-aligned.
  auto format_row = [&](const std::vector<std::string>& r) {
    std::string line;
    for (size_t j = 0; j < r.size(); ++j) {
      if (j) line += "  ";
      line += j < 2 ? fmt::format("{:<{}}", r[j], width[j]) : fmt::format("{:>{}}", r[j], width[j]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line + "\n";
  };
  std::string out = format_row(header);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  out += format_row(rule);
  for (const auto& r : rows) out += format_row(r);
  return out;
}

}  // namespace kvlab
