// fp16: the full-precision cache every table is relative to (K and V kept in the model's dtype).
#include "kvlab/quant/kv_method.h"

namespace kvlab {

class Fp16Method : public KvMethod {
 public:
  using KvMethod::KvMethod;

  static MethodInfo info() {
    return {"fp16", "full-precision KV cache (the reference; K and V kept in the model's dtype)", {},
            [](const ParamSet& p) { return std::make_unique<Fp16Method>(p); }};
  }

  CachePlan plan(const ModelConfig& c) const override {
    CachePlan plan;
    plan.method = "fp16";
    LayerPlan layer;  // bits 16, flush never
    layer.k_flush.kind = layer.v_flush.kind = FlushRule::Kind::Never;
    plan.layers.assign(static_cast<size_t>(c.num_hidden_layers), layer);
    return plan;
  }
};

KVLAB_REGISTER_METHOD(Fp16Method)

}  // namespace kvlab
