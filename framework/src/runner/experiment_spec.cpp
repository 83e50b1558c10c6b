#include "kvlab/runner/experiment_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/yaml_file.h"
#include "kvlab/common/strings.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/model_config.h"
#include "kvlab/quant/kv_method.h"

namespace kvlab {
namespace fs = std::filesystem;

std::string yaml_where(const std::string& file, const YAML::Node& node) {
  if (!node || node.Mark().is_null()) return file;
  return fmt::format("{}:{}", file, node.Mark().line + 1);
}

std::string expand_variables(const std::string& text, const std::string& where) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t start = text.find("${", i);
    if (start == std::string::npos) {
      out += text.substr(i);
      break;
    }
    const size_t end = text.find('}', start);
    if (end == std::string::npos) fail("{}: unterminated '${{' in '{}'", where, text);
    out += text.substr(i, start - i);
    const std::string var = text.substr(start + 2, end - start - 2);
    const char* env = std::getenv(var.c_str());
    if (var == "repo") {
      out += KVLAB_SOURCE_DIR;
    } else if (var == "shared") {
      const char* s = std::getenv("KVLAB_SHARED");
      out += s && *s ? std::string(s) : fs::weakly_canonical(fs::path(KVLAB_SOURCE_DIR) / ".." / "shared").string();
    } else if (var == "models") {
      const char* s = std::getenv("KVLAB_MODELS");
      out += s && *s ? std::string(s) : std::string(KVLAB_SOURCE_DIR) + "/models";
    } else if (env) {
      out += env;
    } else {
      fail("{}: unknown variable ${{{}}} in '{}' (defined: shared, repo, models, or an environment variable)", where,
           var, text);
    }
    i = end + 1;
  }
  return out;
}

std::string resolve_path(const std::string& text, const std::string& base_dir, const std::string& where) {
  fs::path p = expand_variables(text, where);
  if (p.is_relative()) p = fs::path(base_dir) / p;
  return p.lexically_normal().string();
}

namespace {

// Reading helpers: every error names "file:line" and the key.
struct Reader {
  std::string file;

  std::string at(const YAML::Node& n) const { return yaml_where(file, n); }

  void check_keys(const YAML::Node& map, const std::vector<std::string>& allowed, const std::string& what) const {
    for (const auto& kv : map) {
      const std::string key = kv.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        fail("{}: unknown key '{}' in {}{} (valid: {})", at(kv.first), key, what, did_you_mean(key, allowed),
             join(allowed));
    }
  }
  void require_map(const YAML::Node& n, const std::string& what) const {
    if (!n.IsMap()) fail("{}: {} must be a map of key: value", at(n), what);
  }
  std::string string(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) fail("{}: '{}' must be a single value (a string)", at(n), key);
    return n.Scalar();
  }
  int64_t integer(const YAML::Node& n, const std::string& key) const {
    const std::string s = string(n, key);
    try {
      size_t pos = 0;
      const int64_t v = std::stoll(s, &pos);
      if (pos == s.size()) return v;
    } catch (const std::exception&) {
    }
    fail("{}: '{}' must be an integer, got '{}'", at(n), key, s);
  }
  double real(const YAML::Node& n, const std::string& key) const {
    const std::string s = string(n, key);
    try {
      size_t pos = 0;
      const double v = std::stod(s, &pos);
      if (pos == s.size()) return v;
    } catch (const std::exception&) {
    }
    fail("{}: '{}' must be a number, got '{}'", at(n), key, s);
  }
  YAML::Node params_map(const YAML::Node& n, const std::string& what) const {
    if (!n || n.IsNull()) return YAML::Node(YAML::NodeType::Map);
    require_map(n, what);
    for (const auto& kv : n)
      if (!kv.second.IsScalar()) fail("{}: parameter '{}' must be a single value", at(kv.second), kv.first.Scalar());
    return n;
  }
};

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == sep) parts.push_back(trim(s.substr(start, i - start))), start = i + 1;
  return parts;
}

// `top_level`: "owner.param" and "seed" are allowed; inside an entry only "param" and
// "calibration.param".
std::vector<SweepAxis> read_sweep(const Reader& r, const YAML::Node& node, bool top_level, const std::string& what) {
  std::vector<SweepAxis> axes;
  if (!node || node.IsNull()) return axes;
  r.require_map(node, what);
  for (const auto& kv : node) {
    SweepAxis axis;
    axis.key = kv.first.Scalar();
    axis.where = r.at(kv.first);
    for (const std::string& part : split(axis.key, ',')) {
      const auto dots = split(part, '.');
      SweepAxis::Target t;
      for (const auto& d : dots)
        if (d.empty()) fail("{}: sweep key '{}' has an empty part", axis.where, axis.key);
      if (dots.size() == 1) {
        t.param = dots[0];
      } else if (dots.size() == 2 && dots[0] == "calibration") {
        t.calibration = true, t.param = dots[1];
      } else if (top_level && dots.size() == 2) {
        t.owner = dots[0], t.param = dots[1];
      } else if (top_level && dots.size() == 3 && dots[1] == "calibration") {
        t.owner = dots[0], t.calibration = true, t.param = dots[2];
      } else {
        fail("{}: sweep key '{}' is not {}", axis.where, axis.key,
             top_level ? "PARAM, OWNER.PARAM, calibration.PARAM or OWNER.calibration.PARAM"
                       : "PARAM or calibration.PARAM");
      }
      axis.targets.push_back(t);
    }
    std::set<std::string> seen;
    for (const auto& t : axis.targets)
      if (!seen.insert(t.owner + "." + (t.calibration ? "calibration." : "") + t.param).second)
        fail("{}: sweep key '{}' names '{}' twice", axis.where, axis.key, t.param);
    const YAML::Node& values = kv.second;
    if (!values.IsSequence() || values.size() == 0)
      fail("{}: sweep '{}' must be a non-empty list of values", r.at(values), axis.key);
    for (const auto& v : values) {
      std::vector<YAML::Node> point;
      if (axis.targets.size() == 1) {
        if (!v.IsScalar()) fail("{}: sweep '{}': each value must be a single value", r.at(v), axis.key);
        point.push_back(v);
      } else {
        if (!v.IsSequence() || v.size() != axis.targets.size())
          fail("{}: sweep '{}': each value must be a list of {} values, one per key", r.at(v), axis.key,
               axis.targets.size());
        for (const auto& x : v) {
          if (!x.IsScalar()) fail("{}: sweep '{}': each value must be a single value", r.at(x), axis.key);
          point.push_back(x);
        }
      }
      axis.values.push_back(point);
    }
    for (size_t j = 0; j < axis.targets.size(); ++j)
      if (top_level && axis.targets[j].owner.empty() && axis.targets[j].param == "seed" && !axis.targets[j].calibration)
        for (const auto& point : axis.values) r.integer(point[j], "seed");
    axes.push_back(std::move(axis));
  }
  return axes;
}

ModelEntry read_model(const Reader& r, const YAML::Node& node, const ExperimentSpec& spec) {
  ModelEntry m;
  m.where = r.at(node);
  m.dtype = spec.dtype;
  m.device = spec.device;
  if (node.IsScalar()) {
    m.source = ModelEntry::Source::Path;
    m.path = resolve_path(node.Scalar(), spec.dir, m.where);
    m.name = fs::path(m.path).filename().string();
    m.source_node = node;
    return m;
  }
  r.require_map(node, "a model entry");
  r.check_keys(node, {"name", "path", "llama2c", "make", "shape", "dtype", "device"}, "a model entry");
  int sources = 0;
  for (const char* k : {"path", "llama2c", "make"}) sources += node[k] ? 1 : 0;
  if (sources != 1) fail("{}: a model entry needs exactly one of path, llama2c, make", m.where);
  if (node["path"]) {
    m.path = resolve_path(r.string(node["path"], "path"), spec.dir, r.at(node["path"]));
    m.source_node = node["path"];
  } else if (node["llama2c"]) {
    const YAML::Node& l = node["llama2c"];
    r.require_map(l, "llama2c");
    r.check_keys(l, {"model", "tokenizer"}, "llama2c");
    for (const char* k : {"model", "tokenizer"})
      if (!l[k]) fail("{}: llama2c needs '{}'", r.at(l), k);
    m.source = ModelEntry::Source::Llama2c;
    m.llama2c_model = resolve_path(r.string(l["model"], "model"), spec.dir, r.at(l["model"]));
    m.llama2c_tokenizer = resolve_path(r.string(l["tokenizer"], "tokenizer"), spec.dir, r.at(l["tokenizer"]));
    m.source_node = l;
  } else {
    const YAML::Node& mk = node["make"];
    r.require_map(mk, "make");
    r.check_keys(mk, {"shape", "seed", "dtype", "init_std"}, "make");
    m.source = ModelEntry::Source::Make;
    if (mk["shape"]) {
      m.make_shape = r.string(mk["shape"], "shape");
      const auto shapes = ModelConfig::shape_names();
      if (std::find(shapes.begin(), shapes.end(), m.make_shape) == shapes.end())
        fail("{}: make: unknown shape '{}'{} (valid: {})", r.at(mk["shape"]), m.make_shape,
             did_you_mean(m.make_shape, shapes), join(shapes));
    }
    if (mk["seed"]) m.make_seed = static_cast<uint64_t>(r.integer(mk["seed"], "seed"));
    if (mk["dtype"]) m.make_dtype = r.string(mk["dtype"], "dtype");
    if (mk["init_std"]) m.make_init_std = r.real(mk["init_std"], "init_std");
    m.source_node = mk;
  }
  if (node["name"]) {
    m.name = r.string(node["name"], "name");
  } else {
    m.name = m.source == ModelEntry::Source::Path    ? fs::path(m.path).filename().string()
             : m.source == ModelEntry::Source::Llama2c ? fs::path(m.llama2c_model).stem().string()
                                                       : m.make_shape;
  }
  if (m.name.empty() || m.name.find('/') != std::string::npos)
    fail("{}: model name '{}' must be non-empty and contain no '/'", m.where, m.name);
  if (node["shape"]) {
    m.shape = r.string(node["shape"], "shape");
    const auto shapes = ModelConfig::shape_names();
    if (std::find(shapes.begin(), shapes.end(), m.shape) == shapes.end())
      fail("{}: unknown shape '{}'{} (valid: {})", r.at(node["shape"]), m.shape, did_you_mean(m.shape, shapes),
           join(shapes));
  }
  if (node["dtype"]) m.dtype = r.string(node["dtype"], "dtype");
  if (node["device"]) m.device = r.string(node["device"], "device");
  return m;
}

TaskEntry read_task(const Reader& r, const YAML::Node& node) {
  TaskEntry t;
  t.where = r.at(node);
  if (node.IsScalar()) {
    t.name = node.Scalar();
    t.params = YAML::Node(YAML::NodeType::Map);
  } else {
    r.require_map(node, "a task entry");
    r.check_keys(node, {"name", "params", "sweep"}, "a task entry");
    if (!node["name"]) fail("{}: a task entry needs 'name'", t.where);
    t.name = r.string(node["name"], "name");
    t.params = r.params_map(node["params"], "task params");
    t.sweep = read_sweep(r, node["sweep"], false, "a task's sweep");
  }
  const auto names = TaskRegistry::instance().names();
  if (std::find(names.begin(), names.end(), t.name) == names.end())
    fail("{}: unknown task '{}'{} (valid: {})", t.where, t.name, did_you_mean(t.name, names), join(names));
  return t;
}

// A method entry or a preset body. `allow_use`: entries may start from a preset.
MethodEntry read_method(const Reader& r, const YAML::Node& node, const std::map<std::string, MethodEntry>& presets,
                        bool allow_use) {
  MethodEntry m;
  m.where = r.at(node);
  const auto registered = MethodRegistry::instance().names();
  auto known = [&](const std::string& name) {
    return std::find(registered.begin(), registered.end(), name) != registered.end();
  };
  auto unknown = [&](const std::string& name, const std::string& where) {
    std::vector<std::string> all = registered;
    for (const auto& [p, e] : presets) all.push_back(p);
    fail("{}: unknown method or preset '{}'{} (methods: {}{}{})", where, name, did_you_mean(name, all), join(registered),
         presets.empty() ? "" : "; presets: ", [&] {
           std::vector<std::string> ps;
           for (const auto& [p, e] : presets) ps.push_back(p);
           return join(ps);
         }());
  };
  // A preset may name a method this build lacks (a shared presets file for methods landing later);
  // that is an error only where an entry uses it.
  auto use_preset = [&](const std::string& p, const std::string& where) {
    const MethodEntry& base = presets.at(p);
    if (!known(base.name))
      fail("{}: preset '{}' uses method '{}', which is not registered in this build (defined at {}; methods: {})",
           where, p, base.name, base.where, join(registered));
    return base;
  };
  if (node.IsScalar()) {
    const std::string name = node.Scalar();
    if (allow_use && presets.count(name)) {
      m = use_preset(name, r.at(node));
      m.where = r.at(node);
      return m;
    }
    if (!known(name)) unknown(name, m.where);
    m.name = name;
    m.params = YAML::Node(YAML::NodeType::Map);
    m.calibration = YAML::Node(YAML::NodeType::Map);
    return m;
  }
  r.require_map(node, "a method entry");
  std::vector<std::string> keys = {"name", "params", "sweep", "calibration"};
  if (allow_use) keys.push_back("use");
  r.check_keys(node, keys, allow_use ? "a method entry" : "a preset");
  if (node["name"] && node["use"]) fail("{}: a method entry takes 'name' or 'use' (a preset), not both", m.where);
  const YAML::Node params = r.params_map(node["params"], "method params");
  const YAML::Node calibration = r.params_map(node["calibration"], "calibration params");
  const auto sweep = read_sweep(r, node["sweep"], false, "a method's sweep");
  if (node["use"]) {
    const std::string p = r.string(node["use"], "use");
    if (!presets.count(p)) {
      std::vector<std::string> ps;
      for (const auto& [name, e] : presets) ps.push_back(name);
      fail("{}: unknown preset '{}'{} (presets: {})", r.at(node["use"]), p, did_you_mean(p, ps),
           ps.empty() ? "none defined" : join(ps));
    }
    const MethodEntry base = use_preset(p, r.at(node["use"]));
    m.name = base.name;
    m.preset = p;
    // The entry's params override the preset's, key by key; a swept key replaces the preset's.
    auto overlay = [](const YAML::Node& under, const YAML::Node& over) {
      YAML::Node out(YAML::NodeType::Map);
      for (const auto& kv : under)
        if (!over[kv.first.Scalar()]) out.force_insert(kv.first, kv.second);
      for (const auto& kv : over) out.force_insert(kv.first, kv.second);
      return out;
    };
    m.params = overlay(base.params, params);
    m.calibration = overlay(base.calibration, calibration);
    m.sweep = base.sweep;
    for (const auto& a : sweep) {
      m.sweep.erase(std::remove_if(m.sweep.begin(), m.sweep.end(), [&](const SweepAxis& b) { return b.key == a.key; }),
                    m.sweep.end());
      m.sweep.push_back(a);
    }
    return m;
  }
  if (!node["name"]) fail("{}: a method entry needs 'name' (a registered method) or 'use' (a preset)", m.where);
  m.name = r.string(node["name"], "name");
  if (allow_use && !known(m.name)) {
    if (allow_use && presets.count(m.name))
      fail("{}: '{}' is a preset: write 'use: {}'", r.at(node["name"]), m.name, m.name);
    unknown(m.name, r.at(node["name"]));
  }
  m.params = params;
  m.calibration = calibration;
  m.sweep = sweep;
  return m;
}

YAML::Node load_yaml(const std::string& path) {
  check_input_file(path, "experiment spec", kMaxYamlFileBytes);
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("{}: cannot read the file", path);
  } catch (const YAML::ParserException& e) {
    fail("{}:{}:{}: YAML syntax error: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg);
  } catch (const std::exception& e) {  // e.g. a directory: the stream fails with "Is a directory"
    fail("{}: cannot read the file: {}", path, e.what());
  }
  refuse_duplicate_yaml_keys(path);
  return root;
}

void read_presets(const Reader& r, const YAML::Node& node, std::map<std::string, MethodEntry>& presets,
                  std::map<std::string, std::string>& defined_at) {
  if (!node || node.IsNull()) return;
  r.require_map(node, "presets");
  for (const auto& kv : node) {
    const std::string name = kv.first.Scalar();
    if (presets.count(name))
      fail("{}: preset '{}' is defined twice (also at {})", r.at(kv.first), name, defined_at.at(name));
    if (!kv.second.IsMap()) fail("{}: preset '{}' must be a map with name, params, sweep, calibration", r.at(kv.second), name);
    MethodEntry e = read_method(r, kv.second, presets, false);
    e.preset = name;
    presets[name] = e;
    defined_at[name] = r.at(kv.first);
  }
}

}  // namespace

ExperimentSpec ExperimentSpec::load(const std::string& path) {
  ExperimentSpec spec;
  spec.file = path;
  spec.dir = fs::absolute(fs::path(path)).parent_path().lexically_normal().string();
  const YAML::Node root = load_yaml(path);
  Reader r{path};
  if (!root.IsMap()) fail("{}: an experiment must be a YAML map (name, models, tasks, methods, ...)", path);
  r.check_keys(root, {"name", "description", "include", "store", "cache", "dtype", "device", "seed", "models",
                      "tasks", "methods", "presets", "sweep"},
               "the experiment");
  if (!root["name"]) fail("{}: the experiment needs a 'name'", path);
  spec.name = r.string(root["name"], "name");
  if (spec.name.empty() || spec.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != std::string::npos)
    fail("{}: name '{}' may only hold letters, digits, '.', '_' and '-'", r.at(root["name"]), spec.name);
  if (root["description"]) spec.description = r.string(root["description"], "description");
  if (root["store"]) spec.store = resolve_path(r.string(root["store"], "store"), spec.dir, r.at(root["store"]));
  if (root["cache"]) spec.cache = resolve_path(r.string(root["cache"], "cache"), spec.dir, r.at(root["cache"]));
  if (root["dtype"]) spec.dtype = r.string(root["dtype"], "dtype");
  if (root["device"]) spec.device = r.string(root["device"], "device");
  if (root["seed"]) spec.seed = r.integer(root["seed"], "seed"), spec.seed_given = true;

  // Presets: included files first, then this file's own.
  std::map<std::string, MethodEntry> presets;
  std::map<std::string, std::string> defined_at;
  if (const YAML::Node inc = root["include"]) {
    std::vector<YAML::Node> files;
    if (inc.IsScalar()) files.push_back(inc);
    else if (inc.IsSequence()) for (const auto& f : inc) files.push_back(f);
    else fail("{}: 'include' must be a file or a list of files", r.at(inc));
    for (const auto& f : files) {
      const std::string inc_path = resolve_path(r.string(f, "include"), spec.dir, r.at(f));
      std::error_code ec;  // the throwing overload turns a 5,000-byte name into a filesystem_error
      if (!fs::exists(inc_path, ec))
        fail("{}: included file '{}' not found{}", r.at(f), inc_path, ec ? " (" + ec.message() + ")" : "");
      const YAML::Node inc_root = load_yaml(inc_path);
      Reader ri{inc_path};
      if (!inc_root.IsMap()) fail("{}: an included file must be a map with 'presets'", inc_path);
      ri.check_keys(inc_root, {"presets", "description"}, "an included file");
      read_presets(ri, inc_root["presets"], presets, defined_at);
    }
  }
  read_presets(r, root["presets"], presets, defined_at);

  for (const char* key : {"models", "tasks", "methods"}) {
    const YAML::Node n = root[key];
    if (!n) fail("{}: the experiment needs '{}' (a list)", path, key);
    if (!n.IsSequence() || n.size() == 0) fail("{}: '{}' must be a non-empty list", r.at(n), key);
  }
  std::set<std::string> model_names;
  for (const auto& n : root["models"]) {
    spec.models.push_back(read_model(r, n, spec));
    if (!model_names.insert(spec.models.back().name).second)
      fail("{}: two models are named '{}' (give each a distinct 'name')", spec.models.back().where,
           spec.models.back().name);
  }
  for (const auto& n : root["tasks"]) spec.tasks.push_back(read_task(r, n));
  for (const auto& n : root["methods"]) spec.methods.push_back(read_method(r, n, presets, true));
  spec.sweep = read_sweep(r, root["sweep"], true, "sweep");
  return spec;
}

std::string ExperimentSpec::store_path() const {
  if (!store.empty()) return store;
  return (fs::current_path() / "results" / (name + ".sqlite")).lexically_normal().string();
}

std::string ExperimentSpec::cache_dir(const std::string& store_path) const {
  if (!cache.empty()) return cache;
  return fs::absolute(fs::path(store_path)).parent_path().lexically_normal().string();
}

std::vector<std::string> ExperimentSpec::unregistered(const std::string& path) {
  const auto methods = MethodRegistry::instance().names(), tasks = TaskRegistry::instance().names();
  std::vector<std::string> missing;
  auto add = [&](const std::string& kind, const std::string& name, const std::vector<std::string>& known) {
    const std::string text = kind + " " + name;
    if (!name.empty() && std::find(known.begin(), known.end(), name) == known.end() &&
        std::find(missing.begin(), missing.end(), text) == missing.end())
      missing.push_back(text);
  };
  auto entry_name = [](const YAML::Node& e) -> std::string {
    if (e.IsScalar()) return e.Scalar();
    if (e.IsMap() && e["name"] && e["name"].IsScalar()) return e["name"].Scalar();
    return "";
  };
  const YAML::Node root = load_yaml(path);
  if (!root.IsMap()) return missing;
  const std::string dir = fs::absolute(fs::path(path)).parent_path().string();
  // Presets (included and own): the ones the entries use count.
  std::map<std::string, std::string> preset_method;
  auto collect = [&](const YAML::Node& r) {
    if (r.IsMap() && r["presets"] && r["presets"].IsMap())
      for (const auto& kv : r["presets"]) preset_method[kv.first.Scalar()] = entry_name(kv.second);
  };
  if (const YAML::Node inc = root["include"]) {
    std::vector<std::string> files;
    if (inc.IsScalar()) files.push_back(inc.Scalar());
    if (inc.IsSequence())
      for (const auto& f : inc)
        if (f.IsScalar()) files.push_back(f.Scalar());
    for (const auto& f : files) {
      const std::string p = resolve_path(f, dir, path);
      std::error_code ec;
      if (fs::exists(p, ec)) collect(load_yaml(p));
    }
  }
  collect(root);
  if (root["methods"] && root["methods"].IsSequence())
    for (const auto& e : root["methods"]) {
      std::string name = entry_name(e);
      if (e.IsMap() && e["use"] && e["use"].IsScalar()) name = e["use"].Scalar();
      if (preset_method.count(name)) name = preset_method[name];
      add("method", name, methods);
    }
  if (root["tasks"] && root["tasks"].IsSequence())
    for (const auto& e : root["tasks"]) add("task", entry_name(e), tasks);
  return missing;
}

}  // namespace kvlab
