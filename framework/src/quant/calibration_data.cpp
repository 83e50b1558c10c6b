#include "kvlab/quant/calibration_data.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/eval/perplexity.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::vector<int64_t>> jsonl_windows(const std::string& path, std::ifstream& in, int64_t samples,
                                                int64_t max_len, std::optional<int32_t> bos,
                                                const Tokenizer& tok) {
  std::vector<std::vector<int64_t>> out;
  std::string line;
  for (int64_t line_no = 1; static_cast<int64_t>(out.size()) < samples && getline_at_most(in, line, kMaxJsonLineBytes, path, line_no); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json rec;
    try {
      rec = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("calib {}:{}: not a JSON record ({})", path, line_no, e.what());
    }
    std::string text;
    if (rec.contains("text") && rec["text"].is_string()) {
      text = rec["text"].get<std::string>();
    } else if (rec.contains("context") || rec.contains("input")) {
      for (const char* key : {"context", "input"})
        if (rec.contains(key) && rec[key].is_string()) text += (text.empty() ? "" : "\n") + rec[key].get<std::string>();
    } else {
      fail("calib {}:{}: a record needs a string field 'text' (or LongBench's 'context' / 'input')", path, line_no);
    }
    std::vector<int64_t> win;
    if (bos) win.push_back(*bos);
    for (int32_t id : tok.encode(text, false)) {
      if (static_cast<int64_t>(win.size()) >= max_len) break;
      win.push_back(id);
    }
    if (win.size() >= 2) out.push_back(std::move(win));
  }
  if (out.empty()) fail("calib {}: no record with at least 2 tokens", path);
  return out;
}

}  // namespace

std::vector<ParamSpec> calibration_data_params(int64_t default_samples, int64_t default_max_len) {
  return {ParamSpec::string("calib", "", "calibration text: a plain text file (cut into windows) or .jsonl records"),
          ParamSpec::integer("samples", default_samples, "calibration windows (text) or records (.jsonl)", 1),
          ParamSpec::integer("max_len", default_max_len, "tokens per window / record (BOS included)", 2),
          ParamSpec::string("bos", "window", "put the tokenizer's BOS at the start of every window", {"window", "none"})};
}

std::vector<std::vector<int64_t>> load_calibration_windows(const ParamSet& p, const Tokenizer& tok) {
  const std::string path = p.string("calib");
  if (path.empty()) fail("calib: no calibration text given (--calib FILE)");
  check_input_file(path, "calibration text");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("calib {}: cannot be read", path);
  const int64_t samples = p.integer("samples"), max_len = p.integer("max_len");
  std::optional<int32_t> bos;
  if (p.string("bos") == "window") {
    bos = tok.bos_id();
    if (!bos) fail("calib: bos: window, but the tokenizer ({}) has no BOS token (use bos: none)", tok.kind());
  }
  if (ends_with(path, ".jsonl")) return jsonl_windows(path, in, samples, max_len, bos, tok);

  // Plain text: tokenize only as much as the windows need (a growing prefix), since whole corpora
  // can be large; the prefix is cut well past the last token used.
  PerplexityOptions opt;
  opt.ctx = max_len;
  opt.max_windows = samples;
  opt.bos_id = bos;
  const int64_t needed = samples * (bos ? max_len - 1 : max_len);
  std::string text;
  for (int64_t chunk = std::max<int64_t>(4096, 8 * needed);; chunk *= 2) {
    std::string more(static_cast<size_t>(chunk) - text.size(), '\0');
    in.read(more.data(), static_cast<std::streamsize>(more.size()));
    more.resize(static_cast<size_t>(in.gcount()));
    text += more;
    const bool whole = !in;
    std::vector<int32_t> ids = tok.encode(text, false);
    if (whole || static_cast<int64_t>(ids.size()) >= needed + 64) {
      if (!whole) ids.resize(static_cast<size_t>(needed));  // the cut may change the last tokens only
      if (static_cast<int64_t>(ids.size()) < (bos ? max_len - 1 : max_len))
        fail("calib {}: {} tokens, fewer than one window of max_len {}", path, ids.size(), max_len);
      return perplexity_windows(ids, opt);
    }
  }
}

}  // namespace kvlab
