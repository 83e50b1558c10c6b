// kvlab profile mixkvq --model DIR --calib FILE --out PLAN.yaml [--fraction F] [--k-bits B]
//
// MixKVQ's offline channel statistics: the calibration windows run through the full-precision
// model once; every layer records, per kv-head and channel, the query relevance mean|q_d| and the
// key difficulty (mean range over G-token blocks, or max |k|). The plan file keeps them per layer
// (q_relevance, k_difficulty, k_salience: one list per kv-head) beside the selected channels
// (k_exact_channels), so the method can re-select a different fraction without profiling again.
// With --rotate keys|both the statistics are of the rotated queries and keys (the channels the
// rotated cache quantizes); the plan's calibration section records the rotation.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include "channel_stats_cache.h"
#include "kvlab/cache/rotating_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/hadamard.h"
#include "kvlab/common/progress.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/calibration_data.h"
#include "kvlab/quant/method_params.h"
#include "kvlab/quant/plan_file.h"

namespace kvlab::mixkvq {
namespace {

std::vector<ParamSpec> profile_params() {
  namespace cp = common_params;
  std::vector<ParamSpec> p = calibration_data_params(8, 512);
  p.push_back(ParamSpec::real("fraction", 0.0625, "fraction of each head's key channels kept in full precision", 0.0, 0.99));
  p.push_back(cp::bits("k_bits", 2, "bit width of the other key channels (per-channel)"));
  p.push_back(cp::bits("v_bits", 2, "bit width of values (per-token)"));
  p.push_back(cp::group(32));
  p.push_back(ParamSpec::string("difficulty", "range",
                                "key difficulty: range (mean max-min over G-token blocks) or absmax (max |k|)",
                                {"range", "absmax"}));
  return common_params::with_rotation(p);
}

// [H, D] -> one flow list per head, 6 significant digits.
YAML::Node per_head(const at::Tensor& t) {
  at::Tensor x = t.to(at::kDouble).contiguous();
  const double* v = x.data_ptr<double>();
  YAML::Node out(YAML::NodeType::Sequence);
  for (int64_t h = 0; h < x.size(0); ++h) {
    YAML::Node row(YAML::NodeType::Sequence);
    for (int64_t d = 0; d < x.size(1); ++d) row.push_back(yaml_number(v[h * x.size(1) + d], 6));
    row.SetStyle(YAML::EmitterStyle::Flow);
    out.push_back(row);
  }
  out.SetStyle(YAML::EmitterStyle::Flow);
  return out;
}

YAML::Node channel_lists(const std::vector<std::vector<int64_t>>& lists) {
  YAML::Node out(YAML::NodeType::Sequence);
  for (const auto& l : lists) {
    YAML::Node row(YAML::NodeType::Sequence);
    for (int64_t c : l) row.push_back(c);
    row.SetStyle(YAML::EmitterStyle::Flow);
    out.push_back(row);
  }
  out.SetStyle(YAML::EmitterStyle::Flow);
  return out;
}

std::string run_profile(CalibrationContext& ctx) {
  c10::AutoGradMode no_grad(false);
  const ParamSet& p = ctx.params;
  const ModelConfig& c = ctx.model.config();
  const int64_t L = c.num_hidden_layers, H = c.num_key_value_heads, D = c.head_dim;
  const int64_t n_exact = exact_count(p.real("fraction"), D);
  const auto k_bits = static_cast<int>(p.integer("k_bits"));
  const Difficulty difficulty = parse_difficulty(p.string("difficulty"));
  const auto windows = load_calibration_windows(p, ctx.tokenizer);

  std::vector<ChannelStats> stats;
  for (int64_t l = 0; l < L; ++l) stats.emplace_back(H, D, p.integer("group"));
  Progress progress("mixkvq profile", static_cast<int64_t>(windows.size()), "windows", "tok", 10.0,
                    ctx.progress ? stderr : nullptr);
  // With rotate, statistics are taken on the rotated queries and keys: the channels the cache will quantize.
  const RotationSpec rotation = common_params::rotation_spec(p);
  if (rotation.any() && !kernels::is_power_of_two(D))
    fail("mixkvq profile: rotate needs a power-of-two head_dim; this model's head_dim is {}", D);
  for (const auto& w : windows) {
    KvCache cache(L, [&](int64_t l) -> std::unique_ptr<LayerCache> {
      auto inner = std::make_unique<ChannelStatsLayerCache>(stats[static_cast<size_t>(l)]);
      if (!rotation.any()) return inner;
      return std::make_unique<RotatingLayerCache>(std::move(inner), rotation);
    });
    ctx.model.forward(at::tensor(w, at::kLong).unsqueeze(0), cache, std::nullopt, /*last_only=*/true);
    progress.advance(1, "", static_cast<int64_t>(w.size()));
  }
  progress.finish();

  PlanFile plan;
  plan.method = "mixkvq";
  plan.model = ctx.model_dir;
  plan.calibration = p.to_yaml();
  plan.extra = YAML::Node(YAML::NodeType::Map);
  plan.extra["exact_per_head"] = n_exact;
  plan.extra["channels_note"] =
      "per layer, one list per kv-head: k_exact_channels (kept in full precision), q_relevance (mean |q_d|), "
      "k_difficulty (key range or max |k|), k_salience = relevance * difficulty / (2^k_bits - 1)";
  for (int64_t l = 0; l < L; ++l) {
    const ChannelStats& s = stats[static_cast<size_t>(l)];
    const at::Tensor rel = s.relevance(), dif = s.difficulty(difficulty);
    const at::Tensor sal = salience(rel, dif, k_bits);
    PlanFileLayer pl;
    pl.k_bits = k_bits;
    pl.v_bits = static_cast<int>(p.integer("v_bits"));
    pl.node = YAML::Node(YAML::NodeType::Map);
    pl.node["k_exact_channels"] = channel_lists(top_channels(sal, n_exact));
    pl.node["q_relevance"] = per_head(rel);
    pl.node["k_difficulty"] = per_head(dif);
    pl.node["k_salience"] = per_head(sal);
    plan.layers.push_back(pl);
  }
  plan.save(ctx.out);
  return ctx.out;
}

CalibrationInfo profile_info() {
  return {"mixkvq", "profile",
          "MixKVQ channel statistics: per layer and kv-head query relevance x key difficulty; selects the salient key channels",
          profile_params(), "plan", run_profile};
}

KVLAB_REGISTER_CALIBRATION(profile_info)

}  // namespace
}  // namespace kvlab::mixkvq
