#include "kvlab/quant/params.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <cmath>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"

namespace kvlab {
namespace {

std::string where_of(const std::string& where, const YAML::Node& node) {
  const auto mark = node.Mark();
  if (mark.is_null()) return where;
  return fmt::format("{} (line {})", where, mark.line + 1);
}

bool parse_int(const std::string& s, int64_t& out) {
  try {
    size_t pos = 0;
    out = std::stoll(s, &pos);
    return pos == s.size();
  } catch (const std::exception&) {
    return false;
  }
}

bool parse_double(const std::string& s, double& out) {
  try {
    size_t pos = 0;
    out = std::stod(s, &pos);
    return pos == s.size() && std::isfinite(out);
  } catch (const std::exception&) {
    return false;
  }
}

bool parse_bool(const std::string& s, bool& out) {
  if (s == "true" || s == "True" || s == "yes" || s == "on") return out = true, true;
  if (s == "false" || s == "False" || s == "no" || s == "off") return out = false, true;
  return false;
}

// Checks one value against its spec; returns the canonical text.
std::string check(const ParamSpec& spec, const std::string& text, const std::string& where) {
  const std::string key = fmt::format("{}: parameter '{}'", where, spec.name);
  auto in_range = [&](double v) {
    if ((spec.min && v < *spec.min) || (spec.max && v > *spec.max))
      fail("{} = {} is out of range {}", key, text, spec.range_text());
  };
  switch (spec.type) {
    case ParamSpec::Type::Int: {
      int64_t v;
      if (!parse_int(text, v)) fail("{} must be an integer, got '{}'", key, text);
      in_range(static_cast<double>(v));
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), std::to_string(v)) == spec.choices.end())
        fail("{} = {} is not one of {}", key, v, join(spec.choices));
      return std::to_string(v);
    }
    case ParamSpec::Type::Float: {
      double v;
      if (!parse_double(text, v)) fail("{} must be a number, got '{}'", key, text);
      in_range(v);
      return fmt::format("{}", v);
    }
    case ParamSpec::Type::Bool: {
      bool v;
      if (!parse_bool(text, v)) fail("{} must be true or false, got '{}'", key, text);
      return v ? "true" : "false";
    }
    case ParamSpec::Type::String:
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end())
        fail("{} = '{}' is not one of {}{}", key, text, join(spec.choices), did_you_mean(text, spec.choices));
      return text;
  }
  return text;
}

}  // namespace

ParamSpec ParamSpec::integer(std::string name, int64_t dflt, std::string help, std::optional<double> min,
                             std::optional<double> max, std::vector<std::string> choices) {
  return {std::move(name), Type::Int, std::to_string(dflt), std::move(help), min, max, std::move(choices)};
}
ParamSpec ParamSpec::real(std::string name, double dflt, std::string help, std::optional<double> min,
                          std::optional<double> max) {
  return {std::move(name), Type::Float, fmt::format("{}", dflt), std::move(help), min, max, {}};
}
ParamSpec ParamSpec::boolean(std::string name, bool dflt, std::string help) {
  return {std::move(name), Type::Bool, dflt ? "true" : "false", std::move(help), {}, {}, {}};
}
ParamSpec ParamSpec::string(std::string name, std::string dflt, std::string help, std::vector<std::string> choices) {
  return {std::move(name), Type::String, std::move(dflt), std::move(help), {}, {}, std::move(choices)};
}

std::string ParamSpec::type_name() const {
  switch (type) {
    case Type::Int: return "int";
    case Type::Float: return "float";
    case Type::Bool: return "bool";
    case Type::String: return "string";
  }
  return "?";
}

std::string ParamSpec::range_text() const {
  if (!choices.empty()) return "one of: " + join(choices);
  if (min && max) return fmt::format("{:g}..{:g}", *min, *max);
  if (min) return fmt::format(">= {:g}", *min);
  if (max) return fmt::format("<= {:g}", *max);
  return "";
}

ParamSet ParamSet::resolve(const std::vector<ParamSpec>& specs, const YAML::Node& given, const std::string& where) {
  ParamSet out;
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  if (given && !given.IsNull() && !given.IsMap())
    fail("{}: parameters must be a map of name: value", where_of(where, given));
  if (given && given.IsMap()) {
    for (const auto& kv : given) {
      const std::string key = kv.first.as<std::string>();
      if (std::find(names.begin(), names.end(), key) == names.end())
        fail("{}: unknown parameter '{}'{} (valid: {})", where_of(where, kv.first), key, did_you_mean(key, names),
             join(names));
      if (!kv.second.IsScalar())
        fail("{}: parameter '{}' must be a single value", where_of(where, kv.second), key);
    }
  }
  for (const auto& spec : specs) {
    Value v{spec.type, spec.default_value, false};
    if (given && given.IsMap() && given[spec.name]) {
      const YAML::Node node = given[spec.name];
      v.text = check(spec, node.Scalar(), where_of(where, node));
      v.given = true;
    } else {
      v.text = check(spec, spec.default_value, where + " (default)");
    }
    out.order_.push_back(spec.name);
    out.values_[spec.name] = v;
  }
  return out;
}

const ParamSet::Value& ParamSet::get(const std::string& name, ParamSpec::Type type) const {
  auto it = values_.find(name);
  if (it == values_.end()) fail("internal: parameter '{}' was not declared", name);
  if (it->second.type != type) fail("internal: parameter '{}' read with the wrong type", name);
  return it->second;
}

int64_t ParamSet::integer(const std::string& n) const { return std::stoll(get(n, ParamSpec::Type::Int).text); }
double ParamSet::real(const std::string& n) const { return std::stod(get(n, ParamSpec::Type::Float).text); }
bool ParamSet::boolean(const std::string& n) const { return get(n, ParamSpec::Type::Bool).text == "true"; }
const std::string& ParamSet::string(const std::string& n) const { return get(n, ParamSpec::Type::String).text; }
bool ParamSet::was_given(const std::string& n) const {
  auto it = values_.find(n);
  return it != values_.end() && it->second.given;
}

YAML::Node ParamSet::to_yaml() const {
  YAML::Node node(YAML::NodeType::Map);
  for (const auto& name : order_) {
    const Value& v = values_.at(name);
    switch (v.type) {
      case ParamSpec::Type::Int: node[name] = std::stoll(v.text); break;
      case ParamSpec::Type::Float: node[name] = std::stod(v.text); break;
      case ParamSpec::Type::Bool: node[name] = v.text == "true"; break;
      case ParamSpec::Type::String: node[name] = v.text; break;
    }
  }
  return node;
}

nlohmann::json ParamSet::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& name : order_) {
    const Value& v = values_.at(name);
    switch (v.type) {
      case ParamSpec::Type::Int: j[name] = std::stoll(v.text); break;
      case ParamSpec::Type::Float: j[name] = std::stod(v.text); break;
      case ParamSpec::Type::Bool: j[name] = v.text == "true"; break;
      case ParamSpec::Type::String: j[name] = v.text; break;
    }
  }
  return j;
}

std::string ParamSet::slug() const {
  std::vector<std::string> parts;
  for (const auto& name : order_) parts.push_back(name + "=" + values_.at(name).text);
  return join(parts, ",");
}

YAML::Node parse_assignments(const std::vector<std::string>& assignments) {
  YAML::Node node(YAML::NodeType::Map);
  for (const auto& a : assignments) {
    const auto eq = a.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set '{}': expected key=value", a);
    const std::string key = a.substr(0, eq), value = a.substr(eq + 1);
    if (node[key]) fail("--set: parameter '{}' given twice", key);
    node[key] = value;
  }
  return node;
}

}  // namespace kvlab
