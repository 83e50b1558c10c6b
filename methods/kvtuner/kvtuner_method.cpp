// KVTuner-style layer-wise precision pairs (Li et al., ICML 2025): every layer gets its own
// (K bits, V bits) pair, read from a plan file written by `kvlab search kvtuner` (or by hand), and
// the cache runs it with no decision at run time. Storage follows KVTuner's KIVI mode (K
// per-channel, V per-token, KIVI's residual rule) or its per-token mode (kvtuner_scheme.h).
//
// The scheme parameters (mode, group, residual, param_dtype, prefill) default to the values the
// plan was searched with (its calibration section), so a plan runs as it was measured; setting
// one explicitly overrides the plan. The plan is read when the method is created.
#include <fmt/format.h>

#include "kvlab/common/error.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/plan_file.h"
#include "kvtuner_scheme.h"

namespace kvlab::kvtuner {

class KvTunerMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;

  static std::vector<ParamSpec> param_specs() {
    std::vector<ParamSpec> params = {
        ParamSpec::string("plan", "", "plan file with per-layer k_bits / v_bits (kvlab search kvtuner --out DIR writes DIR/plan.yaml)")};
    for (auto& p : Scheme::params()) {
      p.help += " (default: the plan's)";
      params.push_back(p);
    }
    return params;
  }

  static MethodInfo info() {
    return {"kvtuner", "KVTuner (ICML 2025): a searched (K bits, V bits) pair per layer, read from a plan file",
            param_specs(), [](const ParamSet& p) { return std::make_unique<KvTunerMethod>(with_plan_scheme(p)); }};
  }

  // The scheme parameters not set explicitly take the plan's values (its calibration section), so
  // the method's resolved parameters, which results record, are the ones that run.
  static ParamSet with_plan_scheme(const ParamSet& p) {
    if (p.string("plan").empty()) return p;
    const PlanFile file = PlanFile::load(p.string("plan"));
    const YAML::Node given = p.to_yaml();
    YAML::Node merged(YAML::NodeType::Map);
    // rotate and rotate_signs go together: setting either one takes neither from the plan.
    const bool rotation_given = p.was_given("rotate") || p.was_given("rotate_signs");
    for (const auto& spec : param_specs()) {
      const bool rotation = spec.name == "rotate" || spec.name == "rotate_signs";
      if (p.was_given(spec.name)) merged[spec.name] = given[spec.name];
      else if (spec.name != "plan" && !(rotation && rotation_given) && file.calibration[spec.name])
        merged[spec.name] = file.calibration[spec.name];
    }
    return ParamSet::resolve(param_specs(), merged, fmt::format("plan file {}: calibration", file.path));
  }

  CachePlan plan(const ModelConfig& c) const override {
    const ParamSet& p = params();
    if (p.string("plan").empty())
      fail("kvtuner: no plan file (set plan=FILE; `kvlab search kvtuner --model DIR --calib FILE --out DIR` writes one)");
    const PlanFile file = PlanFile::load(p.string("plan"));
    file.check("kvtuner", c.num_hidden_layers);
    std::vector<BitPair> pairs;
    for (const auto& l : file.layers) pairs.push_back({l.k_bits, l.v_bits});
    CachePlan plan = Scheme::from(p).plan(pairs);
    try {
      plan.validate(c.num_hidden_layers, c.head_dim);
    } catch (const Error& e) {
      fail("plan file {}: {}", file.path, e.what());
    }
    return plan;
  }
};

KVLAB_REGISTER_METHOD(KvTunerMethod)

}  // namespace kvlab::kvtuner
