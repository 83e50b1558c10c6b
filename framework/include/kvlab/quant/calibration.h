#pragma once
// Offline calibration steps of methods (KVmix's gradient profile, KVTuner's sensitivity search,
// MixKVQ's channel statistics). A step lives in its method's folder and registers itself with
// KVLAB_REGISTER_CALIBRATION; `kvlab <verb> <method> --model DIR --out PATH [--param value ...]`
// runs it (options derived from its ParamSpecs, '_' written as '-'), and the experiment runner runs
// it once per model, caching the plan file keyed by its inputs. The step writes a plain YAML plan
// that a person can read and edit and that the method accepts through its `plan_param` parameter.
#include <functional>
#include <string>
#include <vector>

#include "kvlab/quant/kv_method.h"  // KVLAB_CONCAT
#include "kvlab/quant/params.h"

namespace kvlab {

class LlamaModel;
class Tokenizer;

struct CalibrationContext {
  LlamaModel& model;
  const Tokenizer& tokenizer;
  std::string model_dir;
  const ParamSet& params;     // the step's own parameters (calibration text, samples, ...)
  std::string out;            // output path (a file or a folder, as the step documents)
  bool progress = true;       // progress line with ETA on stderr
  // Where a step may look for reusable intermediate results of earlier runs (KVTuner's sensitivity
  // table): the runner's plan cache; empty: the folder that holds `out`.
  std::string reuse_dir;
};

struct CalibrationInfo {
  std::string method;         // the registry name of the method it calibrates
  std::string verb;           // the subcommand: "profile" or "search"
  std::string description;    // one line
  std::vector<ParamSpec> params;
  std::string plan_param = "plan";  // the method parameter that takes the written plan file
  // Runs the step, writes its outputs at ctx.out, returns the path of the plan file.
  std::function<std::string(CalibrationContext&)> run;
};

class CalibrationRegistry {
 public:
  static CalibrationRegistry& instance();
  void add(CalibrationInfo info);   // one step per (verb, method); a duplicate is an error
  // The step `verb` of `method`; unknown: error listing the methods that have one.
  const CalibrationInfo& find(const std::string& verb, const std::string& method) const;
  const CalibrationInfo* for_method(const std::string& method) const;  // nullptr if none
  std::vector<std::string> methods_with(const std::string& verb) const;  // sorted

 private:
  std::vector<CalibrationInfo> steps_;
};

struct CalibrationRegistrar {
  explicit CalibrationRegistrar(CalibrationInfo info);
};

#define KVLAB_REGISTER_CALIBRATION(make_info) \
  static const ::kvlab::CalibrationRegistrar KVLAB_CONCAT(kvlab_calibration_, __LINE__)(make_info());

}  // namespace kvlab
