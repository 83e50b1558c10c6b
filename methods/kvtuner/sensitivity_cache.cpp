#include "sensitivity_cache.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>


namespace kvlab::kvtuner {
namespace {

namespace fs = std::filesystem;
const char* kMagic = "kvtuner sensitivity v1";

// FNV-1a over the windows' lengths and ids: any change of text, tokenizer or window cut shows.
uint64_t hash_windows(const std::vector<std::vector<int64_t>>& windows) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](int64_t v) {
    for (int b = 0; b < 8; ++b) h = (h ^ ((static_cast<uint64_t>(v) >> (8 * b)) & 0xff)) * 1099511628211ull;
  };
  for (const auto& w : windows) {
    mix(static_cast<int64_t>(w.size()));
    for (int64_t t : w) mix(t);
  }
  return h;
}

std::optional<SensitivityTable> read_table(const fs::path& file, const std::string& key, size_t layers,
                                           size_t pairs) {
  std::ifstream in(file);
  std::string magic, key_line;
  if (!std::getline(in, magic) || magic != kMagic || !std::getline(in, key_line) || key_line != key) return std::nullopt;
  SensitivityTable t(layers, std::vector<PlanLoss>(pairs));
  std::vector<std::vector<bool>> seen(layers, std::vector<bool>(pairs, false));
  size_t rows = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ss(line);
    size_t l = 0, i = 0;
    PlanLoss v;
    if (!(ss >> l >> i >> v.kl_mean >> v.mean_nll >> v.ref_nll) || l >= layers || i >= pairs || seen[l][i])
      return std::nullopt;
    t[l][i] = v, seen[l][i] = true, ++rows;
  }
  if (rows != layers * pairs) return std::nullopt;
  return t;
}

}  // namespace

std::string sensitivity_key(const LlamaModel& model, const std::string& model_dir, const ParamSet& params,
                            const std::vector<std::vector<int64_t>>& windows) {
  nlohmann::json p = params.to_json();
  for (const char* free_param : {"target_bits", "remeasure", "clusters"}) p.erase(free_param);
  // Weights checksum: each tensor's sum in float64 (one pass over the weights, ~0.1 s at 135M).
  const ModelWeights& w = model.weights();
  std::vector<at::Tensor> tensors = {w.embed, w.final_norm, w.lm_head};
  for (const auto& l : w.layers)
    for (const at::Tensor& t : {l.input_norm, l.q_proj, l.q_bias, l.k_proj, l.k_bias, l.v_proj, l.v_bias, l.o_proj,
                                l.post_norm, l.gate_proj, l.up_proj, l.down_proj})
      tensors.push_back(t);
  uint64_t h = 1469598103934665603ull;
  for (const at::Tensor& t : tensors) {
    const double sum = t.defined() ? t.sum(at::kDouble).item<double>() : 0.0;
    uint64_t bits = 0;
    std::memcpy(&bits, &sum, sizeof bits);
    for (int b = 0; b < 8; ++b) h = (h ^ ((bits >> (8 * b)) & 0xff)) * 1099511628211ull;
  }
  return fmt::format("model={} dtype={} layers={} weights={:016x} windows={} tokens={:016x} params={}", model_dir,
                     c10::toString(model.dtype()), w.layers.size(), h, windows.size(), hash_windows(windows), p.dump());
}

std::optional<SensitivityTable> find_sensitivity(const std::string& out, const std::string& reuse_dir,
                                                 const std::string& key, size_t layers, size_t pairs,
                                                 std::string* found) {
  std::vector<fs::path> candidates{fs::path(out) / kSensitivityFile};
  fs::path root = reuse_dir.empty() ? fs::path(out).parent_path() : fs::path(reuse_dir);
  if (root.empty()) root = ".";
  // Plan caches keep a search's outputs a level or two down (<cache>/kvtuner-<key>/output/).
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (it.depth() >= 3) it.disable_recursion_pending();
    if (it->path().filename() == kSensitivityFile && it->path() != candidates.front()) candidates.push_back(it->path());
  }
  for (const auto& file : candidates) {
    if (!fs::is_regular_file(file, ec)) continue;
    if (auto t = read_table(file, key, layers, pairs)) {
      if (found) *found = file.string();
      return t;
    }
  }
  return std::nullopt;
}

std::string format_sensitivity(const std::string& key, const SensitivityTable& table) {
  std::string text = fmt::format("{}\n{}\n", kMagic, key);
  for (size_t l = 0; l < table.size(); ++l)
    for (size_t i = 0; i < table[l].size(); ++i) {
      const PlanLoss& v = table[l][i];
      text += fmt::format("{} {} {:.17g} {:.17g} {:.17g}\n", l, i, v.kl_mean, v.mean_nll, v.ref_nll);
    }
  return text;
}

}  // namespace kvlab::kvtuner
