#include "kvlab/runner/sweep.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/sha256.h"
#include "kvlab/common/strings.h"
#include "kvlab/eval/task.h"
#include "kvlab/model/dtype.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/method_params.h"
#include "kvlab/runner/cell_id.h"

namespace kvlab {
namespace fs = std::filesystem;

Shard Shard::parse(const std::string& text) {
  const auto slash = text.find('/');
  Shard s;
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    size_t p1 = 0, p2 = 0;
    s.index = std::stoll(text.substr(0, slash), &p1);
    s.count = std::stoll(text.substr(slash + 1), &p2);
    if (p1 != slash || p2 != text.size() - slash - 1) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    fail("--shard '{}': expected i/n (e.g. 0/4)", text);
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count)
    fail("--shard '{}': need n >= 1 and 0 <= i < n", text);
  return s;
}

std::string Shard::str() const { return fmt::format("{}/{}", index, count); }

YAML::Node expand_params(const YAML::Node& params, const std::string& base_dir, const std::string& where) {
  YAML::Node out(YAML::NodeType::Map);
  if (!params || !params.IsMap()) return out;
  for (const auto& kv : params) {
    std::string v = expand_variables(kv.second.Scalar(), yaml_where(where, kv.second));
    const fs::path p(v);
    std::error_code ec;  // a name too long for the file system is just not a file here
    if (!v.empty() && p.is_relative() && !base_dir.empty() && fs::exists(fs::path(base_dir) / p, ec))
      v = (fs::path(base_dir) / p).lexically_normal().string();
    out.force_insert(kv.first.Scalar(), v);
  }
  return out;
}

std::string calibration_plan_dir(const std::string& cache_dir, const std::string& method, const std::string& key) {
  return (fs::path(cache_dir) / "plans" / (method + "-" + key)).string();
}

std::string find_cached_plan(const std::string& cache_dir, const std::string& method, const std::string& key) {
  if (cache_dir.empty()) return "";
  const fs::path dir = calibration_plan_dir(cache_dir, method, key);
  check_input_file((dir / "calibration.json").string(), "calibration record", kMaxJsonFileBytes);
  std::ifstream in(dir / "calibration.json");
  if (!in) return "";
  nlohmann::json j;
  try {
    in >> j;
    return (dir / j.at("plan").get<std::string>()).string();
  } catch (const std::exception&) {
    fail("{}: unreadable calibration record (delete the folder to recompute it)", (dir / "calibration.json").string());
  }
}

namespace {

using Assignment = std::pair<const SweepAxis::Target*, YAML::Node>;  // one swept value
using Point = std::vector<std::pair<const SweepAxis*, Assignment>>;

// The product of the axes' values; each point lists one assignment per target.
std::vector<std::vector<std::pair<const SweepAxis*, Assignment>>> grid_points(const std::vector<SweepAxis>& axes) {
  std::vector<Point> points{{}};
  for (const auto& axis : axes) {
    std::vector<Point> next;
    for (const auto& p : points)
      for (const auto& values : axis.values) {
        Point q = p;
        for (size_t j = 0; j < axis.targets.size(); ++j) q.push_back({&axis, {&axis.targets[j], values[j]}});
        next.push_back(std::move(q));
      }
    points = std::move(next);
  }
  return points;
}

bool declares(const std::vector<ParamSpec>& specs, const std::string& name) {
  return std::any_of(specs.begin(), specs.end(), [&](const ParamSpec& s) { return s.name == name; });
}

std::vector<std::string> names_of(const std::vector<ParamSpec>& specs) {
  std::vector<std::string> n;
  for (const auto& s : specs) n.push_back(s.name);
  return n;
}

bool entry_sweeps(const std::vector<SweepAxis>& sweep, const std::string& param, bool calibration) {
  for (const auto& a : sweep)
    for (const auto& t : a.targets)
      if (t.param == param && t.calibration == calibration) return true;
  return false;
}

// Builds a parameter map: the entry's own params plus assignments (keys not already present).
//
// Memory: yaml-cpp merges the node pool of every node inserted into a map into the map's pool, and
// points the inserted node's pool (the spec's, shared by all its nodes) at the result. With a fresh
// pool per map, each map took in the spec's pool, which by then held every earlier map's nodes:
// memory quadratic in the cells. Every map is therefore made inside one shared pool (`arena`), into
// which the spec's pool is merged once.
class ParamsBuilder {
 public:
  ParamsBuilder(const YAML::Node& base, YAML::Node& arena) : node_(YAML::NodeType::Map) {
    arena.push_back(node_);  // node_'s pool is now the arena's
    if (base && base.IsMap())
      for (const auto& kv : base) node_.force_insert(kv.first, kv.second), keys_[kv.first.Scalar()] = "params";
  }
  void set(const std::string& key, const YAML::Node& value, const std::string& from, const std::string& where) {
    auto it = keys_.find(key);
    if (it != keys_.end())
      fail("{}: '{}' is set twice for the same cell (by {} and by {})", where, key, it->second, from);
    node_.force_insert(key, value);
    keys_[key] = from;
    swept_.push_back(key);
  }
  // A value taken from elsewhere (the method's parameter for its calibration step): not a swept key.
  void follow(const std::string& key, const YAML::Node& value, const std::string& from) {
    node_.force_insert(key, value);
    keys_[key] = from;
  }
  bool has(const std::string& key) const { return keys_.count(key) > 0; }
  const YAML::Node& node() const { return node_; }
  const std::vector<std::string>& swept() const { return swept_; }

 private:
  YAML::Node node_;
  std::map<std::string, std::string> keys_;
  std::vector<std::string> swept_;
};

std::string json_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

nlohmann::json yaml_to_json(const YAML::Node& n) {
  if (!n || n.IsNull()) return nullptr;
  if (n.IsScalar()) return n.Scalar();
  if (n.IsSequence()) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& x : n) a.push_back(yaml_to_json(x));
    return a;
  }
  nlohmann::json o = nlohmann::json::object();
  for (const auto& kv : n) o[kv.first.Scalar()] = yaml_to_json(kv.second);
  return o;
}

void check_top_level_sweep(const ExperimentSpec& spec) {
  const auto& tasks = TaskRegistry::instance();
  const auto& methods = MethodRegistry::instance();
  const auto& cal = CalibrationRegistry::instance();
  for (const auto& axis : spec.sweep)
    for (const auto& t : axis.targets) {
      if (t.owner.empty() && !t.calibration && t.param == "seed") continue;
      bool owner_found = t.owner.empty();
      int declared = 0, free = 0;
      std::vector<std::string> valid;
      for (const auto& te : spec.tasks) {
        if (t.calibration || !(t.owner.empty() || t.owner == te.name)) continue;
        owner_found = true;
        const auto& specs = tasks.find(te.name).params;
        for (const auto& n : names_of(specs)) valid.push_back(n);
        if (!declares(specs, t.param)) continue;
        ++declared;
        if (!(te.params[t.param]) && !entry_sweeps(te.sweep, t.param, false)) ++free;
      }
      for (const auto& me : spec.methods) {
        if (!(t.owner.empty() || t.owner == me.name || t.owner == me.preset)) continue;
        owner_found = true;
        std::vector<ParamSpec> specs;
        if (t.calibration) {
          if (const auto* step = cal.for_method(me.name)) specs = step->params;
        } else {
          specs = methods.find(me.name).params;
        }
        for (const auto& n : names_of(specs)) valid.push_back(n);
        if (!declares(specs, t.param)) continue;
        ++declared;
        const YAML::Node& fixed = t.calibration ? me.calibration : me.params;
        if (!(fixed && fixed.IsMap() && fixed[t.param]) && !entry_sweeps(me.sweep, t.param, t.calibration)) ++free;
      }
      std::sort(valid.begin(), valid.end());
      valid.erase(std::unique(valid.begin(), valid.end()), valid.end());
      const std::string what = t.calibration ? "calibration parameter" : "parameter";
      if (!owner_found)
        fail("{}: sweep key '{}': no method, preset or task '{}' in this experiment", axis.where, axis.key, t.owner);
      if (declared == 0)
        fail("{}: sweep key '{}': no {} '{}' in {}{} (valid: {})", axis.where, axis.key, what, t.param,
             t.owner.empty() ? "the experiment's tasks and methods" : "'" + t.owner + "'",
             did_you_mean(t.param, valid), valid.empty() ? "none" : join(valid));
      if (free == 0)
        fail("{}: sweep key '{}': every {} with '{}' fixes it in its own params or sweep (remove one of the two)",
             axis.where, axis.key, t.owner.empty() ? "method/task" : "'" + t.owner + "'", t.param);
    }
}

// The checks of an entry's own sweep: declared, and not also fixed in the entry's params.
void check_entry_sweep(const std::vector<SweepAxis>& sweep, const std::vector<ParamSpec>& specs,
                       const std::vector<ParamSpec>* calibration_specs, const YAML::Node& params,
                       const YAML::Node& calibration, const std::string& owner) {
  for (const auto& axis : sweep)
    for (const auto& t : axis.targets) {
      if (t.calibration && !calibration_specs)
        fail("{}: sweep key '{}': {} has no calibration step", axis.where, axis.key, owner);
      const auto& s = t.calibration ? *calibration_specs : specs;
      if (!declares(s, t.param))
        fail("{}: sweep key '{}': {} has no {}parameter '{}'{} (valid: {})", axis.where, axis.key, owner,
             t.calibration ? "calibration " : "", t.param, did_you_mean(t.param, names_of(s)), join(names_of(s)));
      const YAML::Node& fixed = t.calibration ? calibration : params;
      if (fixed && fixed.IsMap() && fixed[t.param])
        fail("{}: sweep key '{}': {} also fixes '{}' in its params (line {}); remove one of the two", axis.where,
             axis.key, owner, t.param, fixed[t.param].Mark().line + 1);
    }
}

// Which assignments of a top-level point apply to a task / method entry.
bool applies(const SweepAxis::Target& t, const std::string& name, const std::string& preset) {
  if (!t.owner.empty() && t.owner != name && (preset.empty() || t.owner != preset)) return false;
  return true;
}

// "k=v,k=v" of the parameters given explicitly (or only those in `only`), in declaration order.
std::string given_params_text(const ParamSet& p, const std::vector<ParamSpec>& specs,
                              const std::vector<std::string>& only = {}) {
  const nlohmann::json j = p.to_json();
  std::vector<std::string> parts;
  for (const auto& s : specs) {
    const bool want = only.empty() ? p.was_given(s.name) : std::find(only.begin(), only.end(), s.name) != only.end();
    if (want) parts.push_back(s.name + "=" + json_text(j[s.name]));
  }
  return join(parts, ",");
}

// The grid's size before repeated configs collapse: models x top-level sweep points x the task
// entries' variants x the method entries' variants. Refused over the limit, before anything is
// expanded, naming the factors.
void check_grid_size(const ExperimentSpec& spec, int64_t max_cells) {
  auto plural = [](double n, const std::string& word) { return fmt::format("{:.0f} {}{}", n, word, n == 1 ? "" : "s"); };
  auto axis_text = [](const SweepAxis& a) { return fmt::format("sweep '{}' ({} values)", a.key, a.values.size()); };
  double cells = static_cast<double>(spec.models.size());  // double: 10 axes of 100 values overflow int64
  std::vector<std::string> factors{plural(cells, "model")};
  for (const auto& a : spec.sweep) {
    cells *= static_cast<double>(a.values.size());
    factors.push_back(axis_text(a));
  }
  auto variants = [&](const auto& entries, const std::string& kind) {
    double total = 0;
    std::vector<std::string> swept;
    for (const auto& e : entries) {
      double n = 1;
      std::vector<std::string> axes;
      for (const auto& a : e.sweep) {
        n *= static_cast<double>(a.values.size());
        axes.push_back(axis_text(a));
      }
      total += n;
      if (!axes.empty()) swept.push_back(e.name + ": " + join(axes, " x "));
    }
    factors.push_back(plural(total, kind + " variant") + (swept.empty() ? "" : " (" + join(swept, "; ") + ")"));
    return total;
  };
  cells *= variants(spec.tasks, "task");
  cells *= variants(spec.methods, "method");
  if (cells > static_cast<double>(max_cells))
    fail("{}: the grid has {:.0f} cells, more than the limit of {}: {}; split it into several experiments", spec.file,
         cells, max_cells, join(factors, " x "));
}

}  // namespace

Grid build_grid(const ExperimentSpec& spec, const GridOptions& opt) {
  Grid grid;
  const auto& task_reg = TaskRegistry::instance();
  const auto& method_reg = MethodRegistry::instance();
  const auto& cal_reg = CalibrationRegistry::instance();

  // Structure first: the grid's size, sweep keys against the parameters they name.
  check_grid_size(spec, opt.max_cells);
  check_top_level_sweep(spec);
  for (const auto& te : spec.tasks)
    check_entry_sweep(te.sweep, task_reg.find(te.name).params, nullptr, te.params, YAML::Node(),
                      fmt::format("task '{}' ({})", te.name, te.where));
  for (const auto& me : spec.methods) {
    const auto* step = cal_reg.for_method(me.name);
    check_entry_sweep(me.sweep, method_reg.find(me.name).params, step ? &step->params : nullptr, me.params,
                      me.calibration, fmt::format("method '{}' ({})", me.name, me.where));
  }

  for (const auto& m : spec.models) {
    grid.models.push_back(inspect_model(m, opt.allow_absent_models));
    const ModelInfo& info = grid.models.back();
    if (!info.present)
      grid.notes.push_back(fmt::format("model '{}': checkpoint absent here; plans validated against shape '{}', "
                                       "cell ids unknown until it is present", m.name, m.shape));
    try {
      parse_dtype(m.dtype);
    } catch (const Error& e) {
      fail("{}: model '{}': {}", m.where, m.name, e.what());
    }
    if (m.device != "cpu" && m.device != "cuda" && m.device.rfind("cuda:", 0) != 0)
      fail("{}: model '{}': device '{}' is not cpu, cuda or cuda:N", m.where, m.name, m.device);
  }

  std::set<std::string> seen;
  std::set<std::string> noted_uncalibrated;
  YAML::Node arena(YAML::NodeType::Sequence);  // the one node pool of every cell's parameter maps
  const auto points = grid_points(spec.sweep);
  for (size_t mi = 0; mi < spec.models.size(); ++mi) {
    const ModelEntry& model = spec.models[mi];
    const ModelInfo& info = grid.models[mi];
    const std::string dtype = dtype_name(parse_dtype(model.dtype));
    for (const auto& point : points) {
      int64_t seed = spec.seed;
      bool seed_swept = false;
      for (const auto& [axis, a] : point)
        if (a.first->owner.empty() && !a.first->calibration && a.first->param == "seed") {
          seed = std::stoll(a.second.Scalar());
          seed_swept = true;
        }
      const YAML::Node seed_node(std::to_string(seed));
      const bool seed_set = spec.seed_given || seed_swept;
      for (const auto& te : spec.tasks) {
        const TaskInfo& tinfo = task_reg.find(te.name);
        for (const auto& tvar : grid_points(te.sweep)) {
          ParamsBuilder tb(te.params, arena);
          for (const auto& [axis, a] : tvar) tb.set(a.first->param, a.second, "sweep '" + axis->key + "'", axis->where);
          for (const auto& [axis, a] : point) {
            const auto& t = *a.first;
            if (t.calibration || !applies(t, te.name, "") || !declares(tinfo.params, t.param)) continue;
            if (te.params[t.param] || entry_sweeps(te.sweep, t.param, false)) continue;
            tb.set(t.param, a.second, "sweep '" + axis->key + "'", axis->where);
          }
          // The cell's seed reaches `seed` parameters only when the spec sets or sweeps it; otherwise
          // their own defaults stand.
          if (seed_set && declares(tinfo.params, "seed") && !tb.has("seed"))
            tb.set("seed", seed_node, "the cell's seed", te.where);
          const std::string twhere = fmt::format("{}: task '{}'", te.where, te.name);
          const ParamSet tp = task_reg.create(te.name, tb.node(), twhere)->params();
          if (tinfo.check) {
            const ParamSet expanded = ParamSet::resolve(tinfo.params, expand_params(tb.node(), "", twhere), twhere);
            try {
              tinfo.check(expanded, info.config, spec.dir);
            } catch (const Error& e) {
              fail("{}: on model '{}': {}", twhere, model.name, e.what());
            }
          }
          std::vector<std::string> task_swept = tb.swept();
          task_swept.erase(std::remove(task_swept.begin(), task_swept.end(), "seed"), task_swept.end());
          const std::string task_slug = te.name + (task_swept.empty() ? "" : " " + given_params_text(tp, tinfo.params, task_swept));

          for (const auto& me : spec.methods) {
            const MethodInfo& minfo = method_reg.find(me.name);
            const CalibrationInfo* step = cal_reg.for_method(me.name);
            for (const auto& mvar : grid_points(me.sweep)) {
              ParamsBuilder mb(me.params, arena), cb(me.calibration, arena);
              for (const auto& [axis, a] : mvar)
                (a.first->calibration ? cb : mb).set(a.first->param, a.second, "sweep '" + axis->key + "'", axis->where);
              for (const auto& [axis, a] : point) {
                const auto& t = *a.first;
                if (!applies(t, me.name, me.preset)) continue;
                if (t.owner.empty() && !t.calibration && t.param == "seed" && !declares(minfo.params, "seed")) continue;
                if (t.calibration) {
                  if (!step || !declares(step->params, t.param)) continue;
                  if ((me.calibration && me.calibration[t.param]) || entry_sweeps(me.sweep, t.param, true)) continue;
                  cb.set(t.param, a.second, "sweep '" + axis->key + "'", axis->where);
                } else {
                  if (!declares(minfo.params, t.param)) continue;
                  if (me.params[t.param] || entry_sweeps(me.sweep, t.param, false)) continue;
                  mb.set(t.param, a.second, "sweep '" + axis->key + "'", axis->where);
                }
              }
              if (seed_set && declares(minfo.params, "seed") && !mb.has("seed"))
                mb.set("seed", seed_node, "the cell's seed", me.where);
              if (seed_set && step && declares(step->params, "seed") && !cb.has("seed"))
                cb.set("seed", seed_node, "the cell's seed", me.where);

              const std::string mwhere = fmt::format("{}: method '{}'", me.where, me.name);
              const ParamSet mp = ParamSet::resolve(minfo.params, mb.node(), mwhere);
              Cell cell;
              cell.model = mi;
              cell.task = te.name;
              cell.method = me.name;
              cell.task_params = tb.node();
              cell.method_params = mb.node();
              cell.calibration_params = cb.node();
              cell.task_where = twhere;
              cell.method_where = mwhere;
              cell.seed = seed;

              nlohmann::json method_json = {{"name", me.name}, {"params", mp.to_json()}};
              // Does a calibration step make this cell's plan? Yes when the plan parameter is
              // "auto", or left empty by default.
              bool calibrated = false;
              if (step) {
                const auto it = std::find_if(minfo.params.begin(), minfo.params.end(),
                                             [&](const ParamSpec& s) { return s.name == step->plan_param; });
                if (it == minfo.params.end() || it->type != ParamSpec::Type::String)
                  fail("method '{}': its calibration step writes plan parameter '{}', which the method does not "
                       "declare as a string",
                       me.name, step->plan_param);
                const std::string plan = mp.string(step->plan_param);
                // "auto", or left empty when the method cannot work without a plan (kvmix with
                // bits_from=random needs none: it is left alone).
                calibrated = plan == "auto";
                if (plan.empty() && !mp.was_given(step->plan_param)) {
                  try {
                    method_reg.create(me.name, expand_params(mb.node(), spec.dir, mwhere), mwhere)->plan(info.config);
                  } catch (const Error&) {
                    calibrated = true;
                  }
                }
              }
              const bool calibration_given =
                  me.calibration.size() > 0 ||
                  std::any_of(cb.swept().begin(), cb.swept().end(), [](const std::string& k) { return k != "seed"; });
              if (!step && calibration_given)
                fail("{}: has no calibration step, but 'calibration' parameters are given", mwhere);
              if (step && !calibrated && calibration_given)
                fail("{}: 'calibration' parameters are given, but the step does not run ('{}' is set, or the method "
                     "needs no plan here); use {}: auto to calibrate", mwhere, step->plan_param, step->plan_param);

              CachePlan plan;
              bool have_plan = false;
              const auto expanded_method = expand_params(mb.node(), spec.dir, mwhere);
              if (calibrated) {
                const std::string cwhere = mwhere + " calibration";
                // The step calibrates the cache the method runs, rotated alike (MixKVQ's salience,
                // KVTuner's search): the method's rotation flows into the step unless the
                // calibration section sets it, and then the two must agree.
                for (const auto& r : common_params::rotation()) {
                  if (!declares(step->params, r.name) || !declares(minfo.params, r.name) || !mp.was_given(r.name))
                    continue;
                  const std::string mine = json_text(mp.to_json()[r.name]);
                  if (!cb.has(r.name)) {
                    cb.follow(r.name, YAML::Node(mine), "the method's parameter");
                  } else if (cb.node()[r.name].Scalar() != mine) {
                    fail("{}: '{}' is {} but its calibration's is {} (the calibration follows the method's; set it "
                         "once)", mwhere, r.name, mine, cb.node()[r.name].Scalar());
                  }
                }
                cell.calibration_params = cb.node();
                const ParamSet cp = ParamSet::resolve(step->params, cb.node(), cwhere);
                cell.calibration = step;
                const nlohmann::json inputs = {{"method", me.name}, {"step", step->verb},
                                               {"model", info.fingerprint}, {"dtype", dtype},
                                               {"device", model.device}, {"params", cp.to_json()}};
                cell.calibration_key = info.present ? calibration_key(inputs) : "";
                method_json["calibration"] = {{"step", step->verb}, {"params", cp.to_json()}};
                method_json["params"][step->plan_param] = "auto";  // "" and "auto" are the same cell
                const std::string cached =
                    cell.calibration_key.empty() ? "" : find_cached_plan(opt.cache_dir, me.name, cell.calibration_key);
                if (!cached.empty()) {
                  YAML::Node with_plan(YAML::NodeType::Map);
                  for (const auto& kv : expanded_method)
                    if (kv.first.Scalar() != step->plan_param) with_plan.force_insert(kv.first, kv.second);
                  with_plan.force_insert(step->plan_param, cached);
                  try {
                    plan = method_reg.create(me.name, with_plan, mwhere)->plan(info.config);
                  } catch (const Error& e) {
                    fail("{}: with the cached plan {}: {}", mwhere, cached, e.what());
                  }
                  have_plan = true;
                } else if (noted_uncalibrated.insert(me.name + "/" + model.name).second) {
                  grid.notes.push_back(fmt::format("method '{}' on model '{}': its plan comes from 'kvlab {} {}' "
                                                   "(run once, then cached); checked when it exists",
                                                   me.name, model.name, step->verb, me.name));
                }
              } else {
                if (step && !mp.string(step->plan_param).empty()) {
                  const std::string file = expanded_method[step->plan_param].Scalar();
                  std::error_code ec;
                  if (!fs::is_regular_file(file, ec))
                    fail("{}: parameter '{}': plan file '{}' not found", mwhere, step->plan_param, file);
                  method_json["plan_sha256"] = sha256_hex([&] {
                    check_input_file(file, "plan file", kMaxYamlFileBytes);
                    std::ifstream in(file, std::ios::binary);
                    return std::string(std::istreambuf_iterator<char>(in), {});
                  }());
                }
                plan = method_reg.create(me.name, expanded_method, mwhere)->plan(info.config);
                have_plan = true;
              }
              if (have_plan) {
                try {
                  plan.validate(info.config.num_hidden_layers, info.config.head_dim);
                } catch (const Error& e) {
                  fail("{} ({}): impossible on model '{}' (head_dim {}, {} layers): {}", mwhere,
                       given_params_text(mp, minfo.params), model.name, info.config.head_dim, info.config.num_hidden_layers,
                       e.what());
                }
              }

              cell.config = {{"model", {{"name", model.name}, {"source", yaml_to_json(model.source_node)},
                                        {"fingerprint", info.fingerprint}}},
                             {"dtype", dtype},
                             {"device", model.device},
                             {"task", {{"name", te.name}, {"params", tp.to_json()}}},
                             {"method", method_json},
                             {"seed", seed}};
              std::string mslug = given_params_text(mp, minfo.params);
              if (cell.calibration) {
                const std::vector<std::string> cs = cb.swept();
                std::vector<std::string> parts;
                for (const auto& k : cs)
                  if (k != "seed") parts.push_back("calibration." + k + "=" + cb.node()[k].Scalar());
                if (!parts.empty()) mslug += (mslug.empty() ? "" : ",") + join(parts, ",");
              }
              cell.slug = fmt::format("{}/{}/{}{}{}", model.name, task_slug, me.name, mslug.empty() ? "" : " " + mslug,
                                      seed_swept || seed != 0 ? fmt::format(" seed={}", seed) : "");
              const std::string identity = info.present ? cell_id(cell.config) : cell.config.dump();
              if (!seen.insert(identity).second) {
                ++grid.duplicates;
                continue;
              }
              cell.id = info.present ? identity : "";
              grid.cells.push_back(std::move(cell));
            }
          }
        }
      }
    }
  }
  return grid;
}

}  // namespace kvlab
