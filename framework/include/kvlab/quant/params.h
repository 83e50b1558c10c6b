#pragma once
// Method parameters are declared once (name, type, default, help, valid range) and everything else
// derives from that list: YAML / --set validation, `kvlab methods` help, and the resolved config
// stored with every result. Layering: declared defaults < YAML < command line.
#include <nlohmann/json_fwd.hpp>
#include <yaml-cpp/yaml.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kvlab {

struct ParamSpec {
  enum class Type { Int, Float, Bool, String };
  std::string name;
  Type type = Type::Int;
  std::string default_value;           // as written in YAML, e.g. "2", "0.2", "per-channel"
  std::string help;
  std::optional<double> min, max;      // inclusive bounds for Int / Float
  std::vector<std::string> choices;    // allowed values for String (and Int when listed, e.g. bits)

  static ParamSpec integer(std::string name, int64_t dflt, std::string help, std::optional<double> min = {},
                           std::optional<double> max = {}, std::vector<std::string> choices = {});
  static ParamSpec real(std::string name, double dflt, std::string help, std::optional<double> min = {},
                        std::optional<double> max = {});
  static ParamSpec boolean(std::string name, bool dflt, std::string help);
  static ParamSpec string(std::string name, std::string dflt, std::string help, std::vector<std::string> choices = {});
  std::string type_name() const;
  std::string range_text() const;      // "1..8", "one of: a, b", ""
};

// Resolved parameter values of one method instance.
class ParamSet {
 public:
  // Validates `given` (a YAML map, may be null) against specs: unknown keys (with the closest valid
  // names), wrong types, out-of-range values. `where` prefixes errors (e.g. "exp.yaml:12 method kivi").
  static ParamSet resolve(const std::vector<ParamSpec>& specs, const YAML::Node& given, const std::string& where);

  int64_t integer(const std::string& name) const;
  double real(const std::string& name) const;
  bool boolean(const std::string& name) const;
  const std::string& string(const std::string& name) const;
  bool was_given(const std::string& name) const;  // set explicitly rather than defaulted
  YAML::Node to_yaml() const;                     // every parameter, in declaration order
  nlohmann::json to_json() const;                 // the same, as JSON (results carry it)
  std::string slug() const;                       // "bits=2,group=32,residual=128"

 private:
  struct Value {
    ParamSpec::Type type;
    std::string text;
    bool given;
  };
  const Value& get(const std::string& name, ParamSpec::Type type) const;
  std::vector<std::string> order_;
  std::map<std::string, Value> values_;
};

// Parses "key=value" strings (command-line --set) into a YAML map; values are parsed as YAML scalars.
YAML::Node parse_assignments(const std::vector<std::string>& assignments);

}  // namespace kvlab
