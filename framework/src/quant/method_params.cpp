#include "kvlab/quant/method_params.h"

#include "kvlab/common/error.h"

namespace kvlab::common_params {

RotationSpec rotation_spec(const ParamSet& p) {
  const std::string& what = p.string("rotate");
  const int64_t signs = p.integer("rotate_signs");
  RotationSpec r;
  r.keys = what == "keys" || what == "both";
  r.values = what == "values" || what == "both";
  if (!r.any() && signs != 0)
    fail("rotate_signs={} has no effect with rotate=none (set rotate to keys, values or both, or leave rotate_signs at 0)",
         signs);
  r.sign_seed = static_cast<uint64_t>(signs);
  return r;
}

void apply_rotation(CachePlan& plan, const ParamSet& p) {
  const RotationSpec r = rotation_spec(p);
  for (auto& l : plan.layers) l.rotation = r;
}

}  // namespace kvlab::common_params
