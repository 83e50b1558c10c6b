#pragma once
// How a KVTuner layer pair is stored: KVTuner's two quantization modes, shared by the method and
// its search (so sensitivities are measured under the scheme the plan will run with).
//   kivi       K per-channel (G tokens a group), V per-token (G channels), KIVI's flush rule with a
//              residual of R exact tokens (KVTuner's KIVI mode: G 32, R 32)
//   per-token  K and V per-token (G channels a group), the newest R tokens exact (KVTuner: R 0)
// A pair's 16 means that tensor of that layer is not quantized. rotate / rotate_signs (the shared
// rotation parameters) rotate the quantized streams, so the search measures what the plan will run.
#include <vector>

#include "bit_pair.h"
#include "kvlab/quant/cache_plan.h"
#include "kvlab/quant/params.h"

namespace kvlab::kvtuner {

struct Scheme {
  bool per_channel_keys = true;  // mode kivi
  int64_t group = 32;
  int64_t residual = 32;
  ParamType param = ParamType::F16;
  PrefillAttention prefill = PrefillAttention::FullPrecision;
  RotationSpec rotation;

  // mode, group, residual, param_dtype, prefill, rotate, rotate_signs: declared once for the method
  // and the search.
  static std::vector<ParamSpec> params();
  static Scheme from(const ParamSet& p);

  LayerPlan layer(const BitPair& pair) const;
  CachePlan plan(const std::vector<BitPair>& per_layer) const;  // method "kvtuner"
  std::string mode() const { return per_channel_keys ? "kivi" : "per-token"; }
};

}  // namespace kvlab::kvtuner
