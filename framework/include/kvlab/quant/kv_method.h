#pragma once
// The one seam every KV-cache method plugs into. A method is built from its resolved parameters,
// may calibrate on a model once (KVmix profiling, KVTuner search, MixKVQ channel statistics), and
// turns a model's architecture into a CachePlan that the streaming cache executes.
//
// Adding a method = one folder under methods/ with a class like
//
//   class KiviMethod : public KvMethod {
//    public:
//     static MethodInfo info();                   // name, one-line description, parameters
//     explicit KiviMethod(const ParamSet& p);
//     CachePlan plan(const ModelConfig& c) const override;
//   };
//   KVLAB_REGISTER_METHOD(KiviMethod)
//
// and nothing else changes: the build globs methods/**.cpp into an object library, so every
// registrar object is linked into every binary.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvlab/model/model_config.h"
#include "kvlab/quant/cache_plan.h"
#include "kvlab/quant/params.h"

namespace kvlab {

class LlamaModel;

class KvMethod {
 public:
  explicit KvMethod(ParamSet params) : params_(std::move(params)) {}
  virtual ~KvMethod() = default;

  // Optional one-off calibration on the model the plan will be used with.
  virtual void calibrate(LlamaModel& model) {}
  virtual CachePlan plan(const ModelConfig& config) const = 0;

  const ParamSet& params() const { return params_; }

 private:
  ParamSet params_;
};

struct MethodInfo {
  std::string name;
  std::string description;                   // one line: paper and idea
  std::vector<ParamSpec> params;
  std::function<std::unique_ptr<KvMethod>(const ParamSet&)> make;
};

class MethodRegistry {
 public:
  static MethodRegistry& instance();
  void add(MethodInfo info);                          // duplicate names are an error
  const MethodInfo& find(const std::string& name) const;  // unknown: error with the closest names
  std::vector<std::string> names() const;             // sorted
  // Resolves params (YAML map; null for defaults) and builds the method. `where` prefixes errors.
  std::unique_ptr<KvMethod> create(const std::string& name, const YAML::Node& params,
                                   const std::string& where = "method") const;

 private:
  std::vector<MethodInfo> methods_;
};

struct MethodRegistrar {
  explicit MethodRegistrar(MethodInfo info);
};

#define KVLAB_CONCAT_INNER(a, b) a##b
#define KVLAB_CONCAT(a, b) KVLAB_CONCAT_INNER(a, b)
#define KVLAB_REGISTER_METHOD(Class) \
  static const ::kvlab::MethodRegistrar KVLAB_CONCAT(kvlab_registrar_, __LINE__)(Class::info());

}  // namespace kvlab
