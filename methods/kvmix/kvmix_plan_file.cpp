#include "kvmix_plan_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/yaml_file.h"

namespace kvlab::kvmix {
namespace {

std::string line_of(const YAML::Node& n) {
  const auto m = n.Mark();
  return m.is_null() ? "" : fmt::format(" (line {})", m.line + 1);
}

// "layers[3].k_bits", or "k_bits" at the top level.
std::string key_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// The scalar at `key` of map `parent` (named `parent_path` in messages, "" for the top level) as T.
template <typename T>
T scalar(const std::string& file, const YAML::Node& parent, const std::string& key, const std::string& parent_path,
         const char* type_name) {
  const YAML::Node n = parent[key];
  if (!n) fail("{}: {}{}missing key '{}'", file, parent_path, parent_path.empty() ? "" : line_of(parent) + ": ", key);
  const std::string where = key_path(parent_path, key);
  if (!n.IsScalar()) fail("{}: {}{}: expected {}", file, where, line_of(n), type_name);
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail("{}: {}{}: '{}' is not {}", file, where, line_of(n), n.Scalar(), type_name);
  }
}

int bits_at(const std::string& file, const YAML::Node& layer, const std::string& key, const std::string& where) {
  const auto b = scalar<int64_t>(file, layer, key, where, "an integer");
  if (b != 1 && b != 2 && b != 3 && b != 4 && b != 8 && b != 16)
    fail("{}: {}{}: {} is not one of 1, 2, 3, 4, 8, 16", file, key_path(where, key), line_of(layer[key]), b);
  return static_cast<int>(b);
}

std::optional<double> optional_number(const std::string& file, const YAML::Node& layer, const std::string& key,
                                      const std::string& where, double lo, double hi, bool hi_open) {
  if (!layer[key]) return std::nullopt;
  const auto v = scalar<double>(file, layer, key, where, "a number");
  if (!std::isfinite(v) || v < lo || (hi_open ? v >= hi : v > hi))
    fail("{}: {}{}: {} is outside [{}, {}{}", file, key_path(where, key), line_of(layer[key]), v, lo, hi,
         hi_open ? ")" : "]");
  return v;
}

const char* kKnownKeys[] = {"method", "model", "num_layers", "calibration", "layers"};

// Shortest text that reads back as the same double ("0.1", "2.1875e-05").
std::string number(double v) { return fmt::format("{}", v); }

}  // namespace

bool PlanFile::has_scores() const {
  for (const auto& l : layers)
    if (!l.k_score || !l.v_score) return false;
  return !layers.empty();
}

bool PlanFile::has_ratios() const {
  for (const auto& l : layers)
    if (!l.k_ratio || !l.v_ratio) return false;
  return !layers.empty();
}

std::vector<double> PlanFile::scores(const std::string& which) const {
  std::vector<double> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& s = which == "k" ? layers[i].k_score : layers[i].v_score;
    if (!s)
      fail("{}: layers[{}]: missing key '{}_score' (allocating from scores needs a plan written by kvlab profile kvmix)",
           source, i, which);
    out.push_back(*s);
  }
  return out;
}

PlanFile read_plan_file(const std::string& path) {
  if (!std::filesystem::exists(path)) fail("plan file '{}' does not exist", path);
  check_input_file(path, "plan file", kMaxYamlFileBytes);
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    fail("{}: not valid YAML: {}", path, e.what());
  } catch (const std::exception& e) {  // e.g. a directory: the stream fails with "Is a directory"
    fail("plan file {}: cannot be read: {}", path, e.what());
  }
  refuse_duplicate_yaml_keys(path);
  if (!root.IsMap()) fail("{}: expected a map with keys method, num_layers, layers", path);
  PlanFile plan;
  plan.source = path;
  plan.method = scalar<std::string>(path, root, "method", "", "a string");
  if (root["model"]) plan.model = scalar<std::string>(path, root, "model", "", "a string");
  plan.num_layers = scalar<int64_t>(path, root, "num_layers", "", "an integer");
  if (plan.num_layers <= 0) fail("{}: num_layers{}: {} must be positive", path, line_of(root["num_layers"]), plan.num_layers);
  if (root["calibration"]) {
    if (!root["calibration"].IsMap()) fail("{}: calibration{}: expected a map", path, line_of(root["calibration"]));
    plan.calibration = root["calibration"];
  }
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(std::begin(kKnownKeys), std::end(kKnownKeys), key) == std::end(kKnownKeys))
      plan.extra.emplace_back(key, kv.second);
  }
  const YAML::Node layers = root["layers"];
  if (!layers) fail("{}: missing key 'layers'", path);
  if (!layers.IsSequence()) fail("{}: layers{}: expected a list with one entry per layer", path, line_of(layers));
  if (static_cast<int64_t>(layers.size()) != plan.num_layers)
    fail("{}: layers{}: {} entries but num_layers is {}", path, line_of(layers), layers.size(), plan.num_layers);
  for (size_t i = 0; i < layers.size(); ++i) {
    const YAML::Node n = layers[i];
    const std::string where = fmt::format("layers[{}]", i);
    if (!n.IsMap()) fail("{}: {}{}: expected a map like {{layer: {}, k_bits: 2, v_bits: 2}}", path, where, line_of(n), i);
    PlanLayer l;
    l.layer = scalar<int64_t>(path, n, "layer", where, "an integer");
    if (l.layer != static_cast<int64_t>(i))
      fail("{}: {}.layer{}: {} out of order (layers are listed 0, 1, 2, ...; expected {})", path, where,
           line_of(n["layer"]), l.layer, i);
    l.k_bits = bits_at(path, n, "k_bits", where);
    l.v_bits = bits_at(path, n, "v_bits", where);
    const double inf = std::numeric_limits<double>::infinity();
    l.k_score = optional_number(path, n, "k_score", where, 0, inf, false);
    l.v_score = optional_number(path, n, "v_score", where, 0, inf, false);
    l.k_ratio = optional_number(path, n, "k_ratio", where, 0, 1, true);
    l.v_ratio = optional_number(path, n, "v_ratio", where, 0, 1, true);
    plan.layers.push_back(l);
  }
  return plan;
}

void check_plan_matches_model(const PlanFile& plan, int64_t num_layers) {
  if (plan.num_layers != num_layers)
    fail("{}: num_layers: the plan has {} layers but the model has {} (calibrated on {})", plan.source,
         plan.num_layers, num_layers, plan.model.empty() ? "an unnamed model" : plan.model);
}

void write_plan_file(const PlanFile& plan, const std::string& path) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "method" << YAML::Value << plan.method;
  e << YAML::Key << "model" << YAML::Value << plan.model;
  e << YAML::Key << "num_layers" << YAML::Value << plan.num_layers;
  if (plan.calibration && plan.calibration.size() > 0) {
    YAML::Node calibration = YAML::Clone(plan.calibration);  // one line
    calibration.SetStyle(YAML::EmitterStyle::Flow);
    e << YAML::Key << "calibration" << YAML::Value << calibration;
  }
  for (const auto& [key, node] : plan.extra) e << YAML::Key << key << YAML::Value << node;
  e << YAML::Key << "layers" << YAML::Value << YAML::BeginSeq;
  for (const auto& l : plan.layers) {
    YAML::Node row(YAML::NodeType::Map);  // one line per layer
    row["layer"] = l.layer;
    row["k_bits"] = l.k_bits;
    row["v_bits"] = l.v_bits;
    const std::pair<const char*, const std::optional<double>*> optional[] = {
        {"k_score", &l.k_score}, {"v_score", &l.v_score}, {"k_ratio", &l.k_ratio}, {"v_ratio", &l.v_ratio}};
    for (const auto& [key, value] : optional)
      if (value->has_value()) row[key] = number(**value);
    row.SetStyle(YAML::EmitterStyle::Flow);
    e << row;
  }
  e << YAML::EndSeq << YAML::EndMap;
  if (!e.good()) fail("writing plan '{}': {}", path, e.GetLastError());

  const std::filesystem::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  if (ec) fail("cannot create the folder of plan file '{}': {}", path, ec.message());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) fail("cannot write plan file '{}'", tmp);
    out << "# Per-layer KV-cache plan (" << plan.method << "). Edit k_bits / v_bits (1, 2, 3, 4, 8, 16) and pass it "
        << "back with --set plan=FILE.\n";
    out << e.c_str() << "\n";
    if (!out) fail("cannot write plan file '{}'", tmp);
  }
  std::filesystem::rename(tmp, target, ec);
  if (ec) fail("cannot move '{}' to '{}': {}", tmp, path, ec.message());
}

}  // namespace kvlab::kvmix
