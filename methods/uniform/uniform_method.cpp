// uniform: one bit width for every layer, per-token or per-channel groups, optional full-precision
// window of the newest tokens. The baseline the mixed-precision methods are compared against.
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/method_params.h"

namespace kvlab {

class UniformMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;

  static MethodInfo info() {
    namespace cp = common_params;
    return {"uniform",
            "one bit width for all layers; per-token or per-channel groups; optional window of exact recent tokens",
            cp::with_rotation({cp::bits("bits", 4, "bit width of K and V (unless k_bits / v_bits are set)"),
             ParamSpec::integer("k_bits", 0, "bit width of K (0: bits)", {}, {}, {"0", "1", "2", "3", "4", "8", "16"}),
             ParamSpec::integer("v_bits", 0, "bit width of V (0: bits)", {}, {}, {"0", "1", "2", "3", "4", "8", "16"}),
             cp::group(32),
             ParamSpec::string("k_axis", "per-token", "grouping of K", {"per-token", "per-channel"}),
             ParamSpec::string("v_axis", "per-token", "grouping of V", {"per-token", "per-channel"}),
             ParamSpec::boolean("symmetric", false, "symmetric quantization (no zero point)"),
             ParamSpec::integer("window", 0, "newest tokens kept in full precision (0: none)", 0),
             cp::param_dtype(), cp::prefill()}),
            [](const ParamSet& p) { return std::make_unique<UniformMethod>(p); }};
  }

  CachePlan plan(const ModelConfig& c) const override {
    const ParamSet& p = params();
    auto spec = [&](const char* bits_key, const char* axis_key) {
      TensorQuantSpec s;
      s.bits = static_cast<int>(p.integer(bits_key) > 0 ? p.integer(bits_key) : p.integer("bits"));
      s.group = p.integer("group");
      s.granularity = parse_granularity(p.string(axis_key), "uniform");
      s.symmetric = p.boolean("symmetric");
      s.param = common_params::param_type(p);
      return s;
    };
    FlushRule rule;
    rule.kind = p.integer("window") > 0 ? FlushRule::Kind::Recent : FlushRule::Kind::Eager;
    rule.window = p.integer("window");
    LayerPlan layer{spec("k_bits", "k_axis"), spec("v_bits", "v_axis"), rule, rule, {}};  // rotation: apply_rotation
    CachePlan plan;
    plan.method = "uniform";
    plan.prefill = common_params::prefill_mode(p);
    plan.layers.assign(static_cast<size_t>(c.num_hidden_layers), layer);
    common_params::apply_rotation(plan, p);
    return plan;
  }
};

KVLAB_REGISTER_METHOD(UniformMethod)

}  // namespace kvlab
