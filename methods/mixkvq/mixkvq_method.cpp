// MixKVQ (query-aware key-channel mixed precision, arXiv 2512.19206): per layer and kv-head, the key
// channels that are both hard to quantize and weighted by queries (channel_salience.h) stay in full
// precision; the other key channels are quantized per-channel (G tokens a group), values per-token
// (G channels a group), with a residual of the R newest tokens exact (KIVI's flush rule; the paper
// uses R = 128). The channels come from a plan file written by `kvlab profile mixkvq` (read when
// the method is created); the group defaults to the one the plan's key ranges were measured with.
//
// Two tiers (full precision + low-bit) where the paper has three (BF16 / 4-bit / 2-bit): the cache
// stores one bit width per stream, so the middle tier is not offered; the exact channels are kept
// in the model's dtype (16 bits for fp16/bf16 checkpoints). Every head keeps the same number of
// channels (one packed layout per layer), so selection is by fraction, not by thresholds.
//
// With rotate = keys or both, channels are the rotated ones (rows of R k): the profile records
// salience on rotated queries and keys, the exact channels are indices into that basis, and the
// method follows the plan's rotation (a different key rotation is an error).
#include <fmt/format.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "channel_salience.h"
#include "kvlab/common/error.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/method_params.h"
#include "kvlab/quant/plan_file.h"

namespace kvlab::mixkvq {
namespace {

// A layer entry's per-head lists (e.g. k_exact_channels), checked against the model's kv heads.
template <typename T>
std::vector<std::vector<T>> per_head_lists(const PlanFile& f, size_t layer, const std::string& key, int64_t heads) {
  const std::string where = f.where(layer, key);
  const YAML::Node n = f.layers[layer].node[key];
  if (!n) fail("{}: missing", where);
  if (!n.IsSequence() || static_cast<int64_t>(n.size()) != heads)
    fail("{}: expected one list per kv head ({} lists), got {}", where, heads, n.IsSequence() ? std::to_string(n.size()) : "no list");
  std::vector<std::vector<T>> out;
  for (size_t h = 0; h < n.size(); ++h) {
    if (!n[h].IsSequence()) fail("{}[{}]: expected a list", where, h);
    try {
      out.push_back(n[h].as<std::vector<T>>());
    } catch (const YAML::Exception&) {
      fail("{}[{}]: expected a list of numbers", where, h);
    }
  }
  return out;
}

}  // namespace

class MixKvqMethod : public KvMethod {
 public:
  using KvMethod::KvMethod;

  static MethodInfo info() {
    return {"mixkvq",
            "MixKVQ: salient key channels (query relevance x key range) per head in full precision, the rest "
            "per-channel low-bit; values per-token",
            param_specs(), [](const ParamSet& p) { return std::make_unique<MixKvqMethod>(with_plan_group(p)); }};
  }

  static std::vector<ParamSpec> param_specs() {
    namespace cp = common_params;
    ParamSpec group = cp::group(32);
    group.help += " (default: the plan's)";
    std::vector<ParamSpec> specs = cp::with_rotation(
        {ParamSpec::string("plan", "", "channel plan written by `kvlab profile mixkvq`"),
         ParamSpec::real("fraction", -1.0, "re-select this fraction of channels per head from the plan's "
                                           "salience (-1: the plan's k_exact_channels)", -1.0, 0.99),
         ParamSpec::integer("k_bits", 0, "bit width of the quantized key channels (0: the plan's)", {}, {},
                            {"0", "1", "2", "3", "4", "8"}),
         ParamSpec::integer("v_bits", 0, "bit width of values (0: the plan's)", {}, {}, {"0", "1", "2", "3", "4", "8", "16"}),
         group, ParamSpec::integer("residual", 128, "R: newest tokens kept exact (a multiple of group)", 0),
         cp::param_dtype(), cp::prefill()});
    for (auto& s : specs)
      if (s.name == "rotate" || s.name == "rotate_signs") s.help += " (default: the plan's)";
    return specs;
  }

  // The group the plan's key ranges were measured with, and the rotation its channels were chosen
  // in, unless set explicitly (so the resolved parameters, which results record, are the ones that
  // run). rotate and rotate_signs go together: setting either one takes neither from the plan.
  static ParamSet with_plan_group(const ParamSet& p) {
    if (p.string("plan").empty()) return p;
    const PlanFile file = PlanFile::load(p.string("plan"));
    const bool rotation_given = p.was_given("rotate") || p.was_given("rotate_signs");
    YAML::Node merged(YAML::NodeType::Map);
    const YAML::Node given = p.to_yaml();
    bool changed = false;
    for (const auto& spec : param_specs()) {
      const bool rotation = spec.name == "rotate" || spec.name == "rotate_signs";
      if (p.was_given(spec.name)) {
        merged[spec.name] = given[spec.name];
      } else if ((spec.name == "group" || (rotation && !rotation_given)) && file.calibration[spec.name]) {
        merged[spec.name] = file.calibration[spec.name];
        changed = true;
      }
    }
    if (!changed) return p;
    return ParamSet::resolve(param_specs(), merged, fmt::format("plan file {}: calibration", file.path));
  }

  // The plan's channels are indices into the key basis it was profiled in: the method must rotate
  // keys the same way (values may differ).
  static void check_key_basis(const PlanFile& file, const ParamSet& p) {
    const YAML::Node& cal = file.calibration;
    YAML::Node given(YAML::NodeType::Map);
    for (const char* key : {"rotate", "rotate_signs"})
      if (cal[key]) given[key] = cal[key];
    const RotationSpec planned = common_params::rotation_spec(
        ParamSet::resolve(common_params::rotation(), given, fmt::format("plan file {}: calibration", file.path)));
    const RotationSpec used = common_params::rotation_spec(p);
    const bool same = planned.keys == used.keys && (!used.keys || planned.sign_seed == used.sign_seed);
    if (!same)
      fail("mixkvq: plan file {} was profiled with rotate={} rotate_signs={}, but this method has rotate={} "
           "rotate_signs={}: its key channels belong to the other basis (profile again with the same rotation, or "
           "leave rotate unset to follow the plan)",
           file.path, cal["rotate"] ? cal["rotate"].Scalar() : "none",
           cal["rotate_signs"] ? cal["rotate_signs"].Scalar() : "0", p.string("rotate"), p.integer("rotate_signs"));
  }

  CachePlan plan(const ModelConfig& c) const override {
    const ParamSet& p = params();
    if (p.string("plan").empty())
      fail("mixkvq: no plan file (set plan=FILE; `kvlab profile mixkvq --model DIR --calib FILE --out FILE` writes one)");
    const PlanFile file = PlanFile::load(p.string("plan"));
    file.check("mixkvq", c.num_hidden_layers);
    check_key_basis(file, p);
    const int64_t H = c.num_key_value_heads, D = c.head_dim;
    const double fraction = p.real("fraction");
    const int64_t G = p.integer("group"), R = p.integer("residual");

    CachePlan plan;
    plan.method = "mixkvq";
    plan.prefill = common_params::prefill_mode(p);
    for (size_t l = 0; l < file.layers.size(); ++l) {
      const PlanFileLayer& fl = file.layers[l];
      LayerPlan lp;
      lp.k.bits = p.integer("k_bits") > 0 ? static_cast<int>(p.integer("k_bits")) : fl.k_bits;
      lp.v.bits = p.integer("v_bits") > 0 ? static_cast<int>(p.integer("v_bits")) : fl.v_bits;
      lp.k.granularity = Granularity::PerChannel;
      lp.v.granularity = Granularity::PerToken;
      lp.k.group = lp.v.group = G;
      lp.k.param = lp.v.param = common_params::param_type(p);
      std::vector<std::vector<int64_t>> exact;
      if (fraction >= 0) {
        const auto sal = per_head_lists<double>(file, l, "k_salience", H);
        at::Tensor s = at::empty({H, D}, at::kDouble);
        for (int64_t h = 0; h < H; ++h) {
          if (static_cast<int64_t>(sal[static_cast<size_t>(h)].size()) != D)
            fail("{}[{}]: {} values for head_dim {}", file.where(l, "k_salience"), h, sal[static_cast<size_t>(h)].size(), D);
          for (int64_t d = 0; d < D; ++d) {
            const double v = sal[static_cast<size_t>(h)][static_cast<size_t>(d)];
            // NaN would break the ranking's ordering (and inf tie every channel it touches).
            if (!std::isfinite(v))
              fail("{}[{}][{}]: {} is not a finite number", file.where(l, "k_salience"), h, d, v);
            s[h][d] = v;
          }
        }
        exact = top_channels(s, exact_count(fraction, D));
      } else {
        exact = per_head_lists<int64_t>(file, l, "k_exact_channels", H);
        for (auto& list : exact) std::sort(list.begin(), list.end());  // hand-edited lists need not be sorted
      }
      if (lp.k.quantized() && !exact.empty() && !exact[0].empty()) lp.k.head_exact_channels = exact;
      try {
        lp.k.validate(D, "keys");
      } catch (const Error& e) {
        fail("{}: {}", file.where(l, fraction >= 0 ? "k_salience" : "k_exact_channels"), e.what());
      }
      lp.k_flush.kind = R > 0 ? FlushRule::Kind::Block : FlushRule::Kind::Eager;
      lp.k_flush.window = R;
      lp.v_flush.kind = FlushRule::Kind::Recent;
      lp.v_flush.window = R;
      plan.layers.push_back(lp);
    }
    common_params::apply_rotation(plan, p);
    plan.validate(c.num_hidden_layers, D);
    return plan;
  }
};

KVLAB_REGISTER_METHOD(MixKvqMethod)

}  // namespace kvlab::mixkvq
