// KIVI (Liu et al., ICML 2024): keys quantized per-channel, values per-token, both asymmetric with
// group size G, and a residual of the R newest tokens kept in full precision. KIVI's own streaming
// rule: keys gather in full precision until R have accumulated, then all R are packed at once
// (so 0..R exact keys); values keep exactly the newest R exact and pack the oldest beyond that.
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/method_params.h"

namespace kvlab {

class KiviMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;

  static MethodInfo info() {
    namespace cp = common_params;
    return {"kivi",
            "KIVI (ICML 2024): K per-channel, V per-token, G-sized groups, newest R tokens in full precision",
            cp::with_rotation({cp::bits("bits", 2, "bit width of K and V (KIVI-2, KIVI-4)"), cp::group(32),
                               ParamSpec::integer("residual", 128, "R: full-precision residual length (a multiple of group)", 0),
                               cp::param_dtype(), cp::prefill()}),
            [](const ParamSet& p) { return std::make_unique<KiviMethod>(p); }};
  }

  CachePlan plan(const ModelConfig& c) const override {
    const ParamSet& p = params();
    const int64_t G = p.integer("group"), R = p.integer("residual");
    TensorQuantSpec k, v;
    k.bits = v.bits = static_cast<int>(p.integer("bits"));
    k.group = v.group = G;
    k.granularity = Granularity::PerChannel;
    v.granularity = Granularity::PerToken;
    k.param = v.param = common_params::param_type(p);
    FlushRule k_flush, v_flush;
    // R = 0 degenerates to "pack as soon as a group is complete" for keys, "pack at once" for values.
    k_flush.kind = R > 0 ? FlushRule::Kind::Block : FlushRule::Kind::Eager;
    k_flush.window = R;
    v_flush.kind = FlushRule::Kind::Recent;
    v_flush.window = R;
    CachePlan plan;
    plan.method = "kivi";
    plan.prefill = common_params::prefill_mode(p);
    plan.layers.assign(static_cast<size_t>(c.num_hidden_layers), LayerPlan{k, v, k_flush, v_flush, {}});
    common_params::apply_rotation(plan, p);
    return plan;
  }
};

KVLAB_REGISTER_METHOD(KiviMethod)

}  // namespace kvlab
