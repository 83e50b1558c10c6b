#include "kvmix_calibration_data.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/strings.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::kvmix {
namespace {

std::string read_file(const std::string& path, const std::string& what) {
  if (!std::filesystem::exists(path)) fail("kvmix profile: {} '{}' does not exist", what, path);
  check_input_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("kvmix profile: cannot read {} '{}'", what, path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Uniform integer in [0, n) from raw 64-bit draws (rejection sampling: the same sequence on every
// platform, unlike std::uniform_int_distribution).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

std::vector<int64_t> with_bos(const std::vector<int32_t>& ids, size_t begin, size_t count, const Tokenizer& tok,
                              bool bos) {
  std::vector<int64_t> out;
  if (bos) out.push_back(*tok.bos_id());
  out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(begin),
             ids.begin() + static_cast<std::ptrdiff_t>(begin + count));
  return out;
}

CalibrationPrompts text_prompts(const Tokenizer& tok, const CalibrationDataOptions& o, const std::string& text) {
  const std::vector<int32_t> ids = tok.encode(text, false);
  const auto window = static_cast<size_t>(o.max_len - (o.bos ? 1 : 0));  // text tokens per prompt
  CalibrationPrompts out;
  out.kind = "text";
  out.available = static_cast<int64_t>(ids.size() / window);
  if (out.available == 0)
    fail("kvmix profile: calib '{}' holds {} tokens, fewer than one prompt of max_len {}", o.path, ids.size(),
         o.max_len);
  const int64_t n = std::min(o.samples, out.available);
  for (int64_t k = 0; k < n; ++k) {
    const auto w = static_cast<size_t>(k * out.available / n);  // evenly spread, distinct
    out.prompts.push_back(with_bos(ids, w * window, window, tok, o.bos));
    out.sources.push_back(fmt::format("tokens {}..{}", w * window, (w + 1) * window - 1));
  }
  return out;
}

CalibrationPrompts jsonl_prompts(const Tokenizer& tok, const CalibrationDataOptions& o, const std::string& text) {
  std::vector<std::pair<int64_t, nlohmann::json>> records;  // (line number, record)
  std::istringstream lines(text);
  std::string line;
  for (int64_t no = 1; std::getline(lines, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("kvmix profile: {} line {}: not valid JSON ({})", o.path, no, e.what());
    }
    if (!j.is_object()) fail("kvmix profile: {} line {}: expected a JSON object", o.path, no);
    records.emplace_back(no, std::move(j));
  }
  CalibrationPrompts out;
  out.kind = "jsonl";
  out.available = static_cast<int64_t>(records.size());
  if (records.empty()) fail("kvmix profile: calib '{}' holds no records", o.path);

  nlohmann::json templates;
  if (!o.templates.empty()) {
    try {
      templates = nlohmann::json::parse(read_file(o.templates, "templates file"));
    } catch (const nlohmann::json::exception& e) {
      fail("kvmix profile: templates '{}': not valid JSON ({})", o.templates, e.what());
    }
    if (!templates.is_object()) fail("kvmix profile: templates '{}': expected a map of dataset -> template", o.templates);
  }

  // Draw without replacement: the first n steps of a Fisher-Yates shuffle.
  std::vector<size_t> order(records.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 rng(o.seed);
  const auto n = static_cast<size_t>(std::min<int64_t>(o.samples, out.available));
  for (size_t k = 0; k < n; ++k) std::swap(order[k], order[k + uniform_below(rng, order.size() - k)]);

  for (size_t k = 0; k < n; ++k) {
    const auto& [no, rec] = records[order[k]];
    const std::string where = fmt::format("{} line {}", o.path, no);
    std::vector<std::pair<std::string, std::string>> fields;
    for (const auto& [key, value] : rec.items())
      if (value.is_string()) fields.emplace_back(key, value.get<std::string>());
    std::string prompt;
    if (rec.contains("text") && rec["text"].is_string()) {
      prompt = rec["text"].get<std::string>();
    } else if (rec.contains("context") || rec.contains("input")) {
      std::string tmpl = "{context}\n\n{input}";
      if (!templates.is_null()) {
        if (!rec.contains("dataset") || !rec["dataset"].is_string())
          fail("kvmix profile: {}: no 'dataset' field to pick a template from '{}'", where, o.templates);
        const std::string ds = rec["dataset"].get<std::string>();
        if (!templates.contains(ds) || !templates[ds].is_string())
          fail("kvmix profile: templates '{}' has no template for dataset '{}' ({})", o.templates, ds, where);
        tmpl = templates[ds].get<std::string>();
      }
      prompt = render_template(tmpl, fields, where);
    } else {
      fail("kvmix profile: {}: a record needs a 'text' field or LongBench 'context' / 'input' fields", where);
    }
    const std::vector<int32_t> ids = tok.encode(prompt, false);
    const size_t keep = std::min(ids.size(), static_cast<size_t>(o.max_len - (o.bos ? 1 : 0)));
    std::vector<int64_t> p = with_bos(ids, 0, keep, tok, o.bos);
    if (p.size() < 2) {
      ++out.skipped;
      continue;
    }
    out.prompts.push_back(std::move(p));
    out.sources.push_back(fmt::format("line {}", no));
  }
  if (out.prompts.empty()) fail("kvmix profile: every record drawn from '{}' is shorter than 2 tokens", o.path);
  return out;
}

}  // namespace

std::string render_template(const std::string& tmpl, const std::vector<std::pair<std::string, std::string>>& fields,
                            const std::string& where) {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    const char c = tmpl[i];
    if ((c == '{' || c == '}') && i + 1 < tmpl.size() && tmpl[i + 1] == c) {
      out += c;
      ++i;
      continue;
    }
    if (c == '}') fail("kvmix profile: template for {}: a single '}}' at offset {}", where, i);
    if (c != '{') {
      out += c;
      continue;
    }
    const size_t close = tmpl.find('}', i);
    if (close == std::string::npos) fail("kvmix profile: template for {}: '{{' at offset {} is never closed", where, i);
    const std::string name = tmpl.substr(i + 1, close - i - 1);
    bool found = false;
    for (const auto& [key, value] : fields)
      if (key == name) {
        out += value;
        found = true;
        break;
      }
    if (!found) fail("kvmix profile: {}: the template uses field '{}', which the record lacks", where, name);
    i = close;
  }
  return out;
}

CalibrationPrompts load_calibration_prompts(const Tokenizer& tok, const CalibrationDataOptions& o) {
  if (o.path.empty()) fail("kvmix profile: --calib FILE is required (a text file or a jsonl file)");
  if (o.samples < 1) fail("kvmix profile: samples must be at least 1, got {}", o.samples);
  if (o.bos && !tok.bos_id()) fail("kvmix profile: bos is set but the tokenizer has no BOS token");
  if (o.max_len < (o.bos ? 3 : 2)) fail("kvmix profile: max_len {} leaves no token to predict", o.max_len);
  const std::string text = read_file(o.path, "calib file");
  return ends_with(o.path, ".jsonl") ? jsonl_prompts(tok, o, text) : text_prompts(tok, o, text);
}

}  // namespace kvlab::kvmix
