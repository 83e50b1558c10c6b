// KVmix (AAAI 2026): layer-wise mixed precision for K and V from gradient importance, plus a
// dynamic full-precision window ("recent pivotal context") whose size is a ratio of each layer's
// full-precision part, the ratio depending on the layer's bit width.
//
// Keys per-channel, values per-token, asymmetric, group G (32). Per layer: bits from a plan file
// written by `kvlab profile kvmix` (bits_from=file, the default; a person may have edited them), or
// allocated from the plan's importance scores with this method's tier / budget parameters
// (bits_from=scores), or from a seeded random ranking (bits_from=random, the paper's
// "random-k2.19v2.38" ablation), or from the plan's ranking turned upside down (bits_from=reversed,
// the ablation's other control: the least important layers get the high bits). Flush rule of both
// K and V (METHODS.md section 4): after every append, with n the full-precision tokens, keep
// floor(r * n) and quantize the oldest floor((n - keep) / G) * G.
//
// rotate (shared by every quantizing method) quantizes Hadamard-rotated K/V. The profile does not
// depend on it: its scores are weight gradients under a full-precision cache, and rotating q, k, v
// by an orthogonal R that attention undoes leaves that forward pass, so the gradients, unchanged
// (tests/test_rotation.cpp checks it). One profile, and one cached plan, serves both.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/quant/method_params.h"
#include "kvmix_allocation.h"
#include "kvmix_plan_file.h"

namespace kvlab {
namespace {

std::vector<ParamSpec> kvmix_params() {
  namespace cp = common_params;
  std::vector<ParamSpec> p = {
      ParamSpec::string("plan", "", "plan file from 'kvlab profile kvmix' (per-layer bits, scores, ratios)"),
      ParamSpec::string("bits_from", "file",
                        "file: the plan's k_bits / v_bits; scores: allocate from the plan's scores with the tier / "
                        "budget parameters below; random: allocate from a random ranking (ablation, no plan); "
                        "reversed: allocate from the plan's ranking reversed (ablation)",
                        {"file", "scores", "random", "reversed"}),
      ParamSpec::integer("seed", 0, "bits_from=random: seed of the random layer ranking", 0),
  };
  for (auto& s : kvmix::allocation_params()) p.push_back(s);
  p.push_back(ParamSpec::integer("group", 32, "G: tokens per key group (per-channel), channels per value group "
                                              "(per-token); K and V move to the quantized part G tokens at a time", 1));
  p.push_back(ParamSpec::integer("k3_group", 0, "key group of 3-bit layers (0: group; the reference packs 3-bit keys "
                                                "in groups of 11 tokens)", 0));
  p.push_back(cp::param_dtype());
  p.push_back(cp::prefill());
  return cp::with_rotation(p);
}

// The same score values dealt out in the opposite order: the layer ranked first gets the lowest
// score, the second the second lowest, and so on (ties keep layer order). Tiers and budgets see the
// same distribution of scores, only on the other layers.
std::vector<double> reversed_ranking(const std::vector<double>& scores) {
  std::vector<size_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  std::vector<double> out(scores.size());
  for (size_t i = 0; i < order.size(); ++i) out[order[i]] = scores[order[order.size() - 1 - i]];
  return out;
}

class KvmixMethod : public KvMethod {
 public:
  static MethodInfo info() {
    return {"kvmix",
            "KVmix (AAAI 2026): per-layer K/V bits from gradient importance of k_proj/v_proj; a bit-dependent ratio "
            "of recent tokens kept in full precision",
            kvmix_params(), [](const ParamSet& p) { return std::make_unique<KvmixMethod>(p); }};
  }

  explicit KvmixMethod(const ParamSet& p) : KvMethod(p) {
    const std::string from = p.string("bits_from");
    const std::string plan = p.string("plan");
    if (from == "random") {
      if (!plan.empty()) fail("kvmix: plan '{}' is not used with bits_from=random (drop one of them)", plan);
      return;
    }
    if (plan.empty())
      fail("kvmix: set plan=FILE (write one with 'kvlab profile kvmix --model DIR --calib TEXT --out PLAN.yaml'), "
           "or bits_from=random");
    if (from == "file") {
      const auto given = kvmix::given_allocation_params(p);
      if (!given.empty())
        fail("kvmix: parameter '{}' only applies when bits are allocated from scores (set bits_from=scores); with "
             "bits_from=file the bits are the plan's",
             given.front());
    }
    file_ = kvmix::read_plan_file(plan);
    // A plan written for another method (a KVTuner or MixKVQ plan, say) has bits chosen for another cache.
    if (file_.method != "kvmix")
      fail("{}: method is '{}', expected 'kvmix' (a plan is written for one method)", plan, file_.method);
    if (from == "scores" || from == "reversed") {
      file_.scores("k");
      file_.scores("v");
    }
  }

  CachePlan plan(const ModelConfig& c) const override {
    const ParamSet& p = params();
    const int64_t L = c.num_hidden_layers;
    const std::string from = p.string("bits_from");
    const std::string preset = p.string("ratio_preset");
    std::vector<int> k_bits, v_bits;
    std::vector<double> k_ratio(static_cast<size_t>(L)), v_ratio(static_cast<size_t>(L));
    bool ratios_from_file = false;
    if (from == "file") {
      kvmix::check_plan_matches_model(file_, L);
      for (const auto& l : file_.layers) k_bits.push_back(l.k_bits), v_bits.push_back(l.v_bits);
      // The file's ratios stand unless a preset is asked for explicitly.
      ratios_from_file = file_.has_ratios() && !p.was_given("ratio_preset");
    } else {
      std::vector<double> k_scores, v_scores;
      if (from == "scores" || from == "reversed") {
        kvmix::check_plan_matches_model(file_, L);
        k_scores = file_.scores("k");
        v_scores = file_.scores("v");
        if (from == "reversed") k_scores = reversed_ranking(k_scores), v_scores = reversed_ranking(v_scores);
      } else {
        std::mt19937_64 rng(static_cast<uint64_t>(p.integer("seed")));
        for (int64_t l = 0; l < L; ++l) k_scores.push_back(static_cast<double>(rng() >> 11));
        for (int64_t l = 0; l < L; ++l) v_scores.push_back(static_cast<double>(rng() >> 11));
      }
      const auto k = kvmix::allocate(k_scores, p, "k"), v = kvmix::allocate(v_scores, p, "v");
      for (const auto* a : {&k, &v})
        if (a->mode == "budget" && !a->budget.exact) fmt::print(stderr, "kvlab: note: kvmix: {}\n", a->budget.note);
      k_bits = k.bits;
      v_bits = v.bits;
    }
    for (int64_t l = 0; l < L; ++l) {
      const auto i = static_cast<size_t>(l);
      k_ratio[i] = ratios_from_file ? *file_.layers[i].k_ratio : kvmix::rpc_ratio(preset, k_bits[i]);
      v_ratio[i] = ratios_from_file ? *file_.layers[i].v_ratio : kvmix::rpc_ratio(preset, v_bits[i]);
    }

    const int64_t G = p.integer("group");
    const int64_t G3 = p.integer("k3_group") > 0 ? p.integer("k3_group") : G;
    CachePlan plan;
    plan.method = "kvmix";
    plan.prefill = common_params::prefill_mode(p);
    for (int64_t l = 0; l < L; ++l) {
      const auto i = static_cast<size_t>(l);
      LayerPlan lp;
      lp.k.bits = k_bits[i];
      lp.k.group = k_bits[i] == 3 ? G3 : G;
      lp.k.granularity = Granularity::PerChannel;
      lp.v.bits = v_bits[i];
      lp.v.group = G;
      lp.v.granularity = Granularity::PerToken;
      lp.k.param = lp.v.param = common_params::param_type(p);
      lp.k_flush.kind = lp.v_flush.kind = FlushRule::Kind::Ratio;
      lp.k_flush.ratio = k_ratio[i];
      lp.v_flush.ratio = v_ratio[i];
      lp.v_flush.unit = G;  // values too move in whole groups of G tokens (the reference's rule)
      plan.layers.push_back(lp);
    }
    common_params::apply_rotation(plan, p);
    return plan;
  }

 private:
  kvmix::PlanFile file_;
};

KVLAB_REGISTER_METHOD(KvmixMethod)

}  // namespace
}  // namespace kvlab
