#include "kvlab/quant/plan_file.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/yaml_file.h"

namespace kvlab {
namespace {

const std::set<std::string> kCoreLayerKeys = {"layer", "k_bits", "v_bits", "k_score", "v_score"};
const std::set<std::string> kCoreTopKeys = {"method", "model", "num_layers", "calibration", "layers"};

template <typename T>
T scalar(const YAML::Node& n, const std::string& where, const char* type) {
  if (!n.IsScalar()) fail("{}: expected {}, got a {}", where, type, n.IsMap() ? "map" : n.IsSequence() ? "list" : "null");
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail("{}: '{}' is not {}", where, n.Scalar(), type);
  }
}

// method and model are names that are matched and written back: a control character in one (a NUL,
// a newline) would not survive the YAML round trip and only garbles the messages that quote it.
std::string name_of(const YAML::Node& n, const std::string& where) {
  std::string s = scalar<std::string>(n, where, "a string");
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) fail("{}: control character 0x{:02x} at byte {} of the name", where, c, i);
  }
  return s;
}

int bits_of(const YAML::Node& n, const std::string& where) {
  if (!n) fail("{}: missing", where);
  const int b = scalar<int>(n, where, "an integer");
  if (b != 1 && b != 2 && b != 3 && b != 4 && b != 8 && b != 16)
    fail("{}: {} bits is not one of 1, 2, 3, 4, 8, 16", where, b);
  return b;
}

}  // namespace

YAML::Node yaml_number(double v, int digits) { return YAML::Node(fmt::format("{:.{}g}", v, digits)); }

PlanFile PlanFile::load(const std::string& path) {
  check_input_file(path, "plan file", kMaxYamlFileBytes);
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("plan file {}: cannot be read", path);
  } catch (const YAML::Exception& e) {
    fail("plan file {}:{}: {}", path, e.mark.line + 1, e.msg);
  } catch (const std::exception& e) {  // e.g. a directory: the stream fails with "Is a directory"
    fail("plan file {}: cannot be read: {}", path, e.what());
  }
  refuse_duplicate_yaml_keys(path);
  if (!root.IsMap()) fail("plan file {}: expected a YAML map with method, num_layers and layers", path);
  PlanFile p;
  p.path = path;
  for (const char* key : {"method", "num_layers", "layers"})
    if (!root[key]) fail("plan file {}: missing key '{}'", path, key);
  p.method = name_of(root["method"], path + ": method");
  if (root["model"]) p.model = name_of(root["model"], path + ": model");
  p.calibration = root["calibration"] ? root["calibration"] : YAML::Node(YAML::NodeType::Map);
  if (!p.calibration.IsMap()) fail("plan file {}: calibration must be a map", path);
  const auto n = scalar<int64_t>(root["num_layers"], path + ": num_layers", "an integer");
  const YAML::Node layers = root["layers"];
  if (!layers.IsSequence()) fail("plan file {}: layers must be a list of per-layer entries", path);
  if (static_cast<int64_t>(layers.size()) != n)
    fail("plan file {}: num_layers is {} but layers has {} entries", path, n, layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const YAML::Node e = layers[i];
    const std::string at = fmt::format("plan file {}: layers[{}]", path, i);
    if (!e.IsMap()) fail("{}: expected a map like {{layer: {}, k_bits: 4, v_bits: 2}}", at, i);
    if (!e["layer"]) fail("{}.layer: missing", at);
    const auto l = scalar<int64_t>(e["layer"], at + ".layer", "an integer");
    if (l != static_cast<int64_t>(i)) fail("{}.layer: is {}, expected {} (entries in layer order)", at, l, i);
    PlanFileLayer pl;
    pl.k_bits = bits_of(e["k_bits"], at + ".k_bits");
    pl.v_bits = bits_of(e["v_bits"], at + ".v_bits");
    if (e["k_score"]) pl.k_score = scalar<double>(e["k_score"], at + ".k_score", "a number");
    if (e["v_score"]) pl.v_score = scalar<double>(e["v_score"], at + ".v_score", "a number");
    pl.node = e;
    p.layers.push_back(pl);
  }
  p.extra = YAML::Node(YAML::NodeType::Map);
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    if (!kCoreTopKeys.count(key)) p.extra[key] = kv.second;
  }
  return p;
}

void PlanFile::check(const std::string& expected_method, int64_t model_layers) const {
  if (method != expected_method)
    fail("plan file {}: method is '{}', expected '{}' (a plan is written for one method)", path, method,
         expected_method);
  if (static_cast<int64_t>(layers.size()) != model_layers)
    fail("plan file {}: num_layers is {} but the model has {} layers{}", path, layers.size(), model_layers,
         model.empty() ? "" : fmt::format(" (the plan was calibrated on {})", model));
}

std::string PlanFile::where(size_t layer, const std::string& key) const {
  return fmt::format("plan file {}: layers[{}].{}", path, layer, key);
}

void PlanFile::save(const std::string& out_path) const {
  YAML::Emitter out;
  out.SetDoublePrecision(7);
  out << YAML::BeginMap;
  out << YAML::Key << "method" << YAML::Value << method;
  out << YAML::Key << "model" << YAML::Value << model;
  out << YAML::Key << "num_layers" << YAML::Value << layers.size();
  out << YAML::Key << "calibration" << YAML::Value << YAML::Flow << YAML::BeginMap;
  if (calibration)
    for (const auto& kv : calibration) out << YAML::Key << kv.first << YAML::Value << kv.second;
  out << YAML::EndMap;
  if (extra)
    for (const auto& kv : extra) {
      out << YAML::Key << kv.first << YAML::Value << kv.second;
    }
  out << YAML::Key << "layers" << YAML::Value << YAML::BeginSeq;
  for (size_t i = 0; i < layers.size(); ++i) {
    const PlanFileLayer& l = layers[i];
    out << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "layer" << YAML::Value << i;
    out << YAML::Key << "k_bits" << YAML::Value << l.k_bits;
    out << YAML::Key << "v_bits" << YAML::Value << l.v_bits;
    if (l.k_score) out << YAML::Key << "k_score" << YAML::Value << *l.k_score;
    if (l.v_score) out << YAML::Key << "v_score" << YAML::Value << *l.v_score;
    if (l.node && l.node.IsMap())
      for (const auto& kv : l.node) {
        const auto key = kv.first.as<std::string>();
        if (!kCoreLayerKeys.count(key)) out << YAML::Key << key << YAML::Value << kv.second;
      }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  if (!out.good()) fail("plan file {}: cannot be written: {}", out_path, out.GetLastError());

  const std::filesystem::path target(out_path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream f(tmp);
    f << out.c_str() << "\n";
    if (!f) fail("plan file {}: cannot be written", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail("plan file {}: cannot be written: {}", out_path, ec.message());
  }
}

}  // namespace kvlab
