#include "kvtuner_scheme.h"

#include "kvlab/quant/method_params.h"

namespace kvlab::kvtuner {

std::vector<ParamSpec> Scheme::params() {
  namespace cp = common_params;
  return cp::with_rotation(
      {ParamSpec::string("mode", "kivi", "kivi: K per-channel, V per-token (KIVI's flush rule); per-token: both per-token",
                         {"kivi", "per-token"}),
       cp::group(32), ParamSpec::integer("residual", 32, "R: newest tokens kept exact (kivi: a multiple of group)", 0),
       cp::param_dtype(), cp::prefill()});
}

Scheme Scheme::from(const ParamSet& p) {
  Scheme s;
  s.per_channel_keys = p.string("mode") == "kivi";
  s.group = p.integer("group");
  s.residual = p.integer("residual");
  s.param = common_params::param_type(p);
  s.prefill = common_params::prefill_mode(p);
  s.rotation = common_params::rotation_spec(p);
  return s;
}

LayerPlan Scheme::layer(const BitPair& pair) const {
  LayerPlan lp;
  lp.k.bits = pair.k, lp.v.bits = pair.v;
  lp.k.group = lp.v.group = group;
  lp.k.param = lp.v.param = param;
  lp.k.granularity = per_channel_keys ? Granularity::PerChannel : Granularity::PerToken;
  lp.v.granularity = Granularity::PerToken;
  lp.v_flush.kind = FlushRule::Kind::Recent;
  lp.v_flush.window = residual;
  if (per_channel_keys && residual > 0) {
    lp.k_flush.kind = FlushRule::Kind::Block;  // KIVI: R keys gather, then all R are packed
    lp.k_flush.window = residual;
  } else {
    lp.k_flush = lp.v_flush;
  }
  lp.rotation = rotation;
  return lp;
}

CachePlan Scheme::plan(const std::vector<BitPair>& per_layer) const {
  CachePlan plan;
  plan.method = "kvtuner";
  plan.prefill = prefill;
  for (const auto& p : per_layer) plan.layers.push_back(layer(p));
  return plan;
}

}  // namespace kvlab::kvtuner
