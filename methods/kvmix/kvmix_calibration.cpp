// `kvlab profile kvmix`: KVmix's offline step. Profiles gradient importance of every layer's
// k_proj / v_proj on calibration prompts (kvmix_profiler.h), allocates bits (kvmix_allocation.h)
// and writes the per-layer plan file (kvmix_plan_file.h) with scores, bits, ratios and inputs.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/model/dtype.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "kvmix_allocation.h"
#include "kvmix_calibration_data.h"
#include "kvmix_plan_file.h"
#include "kvmix_profiler.h"

namespace kvlab::kvmix {
namespace {

const char* kHeldOut = "held-out: calibration text chosen apart from the evaluation data";
const char* kFaithful =
    "faithful: calibration records drawn from the evaluated task's own file (overlaps evaluation, as the "
    "reference does)";

std::vector<ParamSpec> profile_params() {
  std::vector<ParamSpec> p = {
      ParamSpec::string("calib", "", "calibration data: a text file (cut into windows) or a jsonl file (C4 'text' "
                                     "or LongBench 'context'/'input' records)"),
      ParamSpec::integer("samples", 10, "calibration prompts (the reference uses 10 per task)", 1),
      ParamSpec::integer("max_len", 1024, "tokens per prompt (longer prompts keep their first max_len)", 2),
      ParamSpec::string("data_mode", "held-out",
                        "held-out: calibration data apart from evaluation (default); faithful: a LongBench task's "
                        "own jsonl, as the reference profiles each task on its own records (labelled in the plan)",
                        {"held-out", "faithful"}),
      ParamSpec::integer("seed", 42, "jsonl: seed of the record sampling", 0),
      ParamSpec::string("templates", "", "jsonl: LongBench dataset2prompt.json to render records with their task's "
                                         "prompt (default: context, blank line, input)"),
      ParamSpec::boolean("bos", false, "prepend BOS to every prompt (the reference does not)"),
      ParamSpec::boolean("faithful_loss", false, "the reference's loss: labels shifted twice (predicts token t+2), "
                                                 "last target the EOS id; default: plain next-token loss"),
  };
  for (auto& s : allocation_params()) p.push_back(s);
  return p;
}

// The step's resolved parameters as a YAML map, numbers in their shortest form ("0.1", not
// "0.10000000000000001" as YAML::Node would write a double).
YAML::Node params_node(const ParamSet& p) {
  YAML::Node n(YAML::NodeType::Map);
  const nlohmann::json j = p.to_json();
  for (const auto& kv : p.to_yaml()) {  // declaration order
    const std::string key = kv.first.as<std::string>();
    const nlohmann::json& value = j.at(key);
    if (value.is_number_float()) n[key] = fmt::format("{}", value.get<double>());
    else if (value.is_number_integer()) n[key] = value.get<int64_t>();
    else if (value.is_boolean()) n[key] = value.get<bool>();
    else n[key] = value.get<std::string>();
  }
  return n;
}

YAML::Node allocation_node(const TensorAllocation& a) {
  YAML::Node n(YAML::NodeType::Map);
  n["mode"] = a.mode;
  n["average_bits"] = fmt::format("{}", a.average);
  if (a.mode == "budget") {
    n["target"] = fmt::format("{}", a.budget.target);
    n["exact"] = a.budget.exact;
    n["widths"] = a.widths;
    n["objective"] = "min sum score * 1/(2^b - 1)^2";
    if (!a.budget.note.empty()) n["note"] = a.budget.note;
  } else {
    n["important_frac"] = fmt::format("{}", a.tiers.important_fraction);
    n["general_frac"] = fmt::format("{}", a.tiers.general_fraction);
    n["bits"] = std::vector<int>{a.tiers.important_bits, a.tiers.general_bits, a.tiers.rest_bits};
  }
  n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}

std::string run_profile(CalibrationContext& ctx) {
  const ParamSet& p = ctx.params;
  CalibrationDataOptions data;
  data.path = p.string("calib");
  data.samples = p.integer("samples");
  data.max_len = p.integer("max_len");
  data.seed = static_cast<uint64_t>(p.integer("seed"));
  data.bos = p.boolean("bos");
  data.templates = p.string("templates");
  const bool faithful_data = p.string("data_mode") == "faithful";
  if (faithful_data && (data.path.size() < 6 || data.path.substr(data.path.size() - 6) != ".jsonl"))
    fail("kvmix profile: data_mode=faithful draws from a LongBench task's own records: pass that task's .jsonl as "
         "--calib (got '{}')",
         data.path);
  // Check the allocation parameters before the (long) profile runs.
  for (const char* w : {"k", "v"}) {
    const double target = p.real(std::string(w) + "_avg_bits");
    if (target > 0) {
      const auto widths = parse_widths(p.string(std::string(w) + "_widths"), std::string("--") + w + "-widths");
      budget_allocation(std::vector<double>(static_cast<size_t>(ctx.model.config().num_hidden_layers), 1.0), widths,
                        target, std::string(w) + "_avg_bits");
    }
  }

  const CalibrationPrompts prompts = load_calibration_prompts(ctx.tokenizer, data);
  ProfileOptions opt;
  opt.loss = p.boolean("faithful_loss") ? ProfileLoss::Reference : ProfileLoss::NextToken;
  if (opt.loss == ProfileLoss::Reference) {
    if (!ctx.tokenizer.eos_id()) fail("kvmix profile: faithful_loss needs an EOS id (the pad); the tokenizer has none");
    opt.pad_id = *ctx.tokenizer.eos_id();
  }
  opt.progress = ctx.progress;
  const Profile prof = profile_importance(ctx.model, prompts.prompts, opt);

  const TensorAllocation k = allocate(prof.k_score, p, "k"), v = allocate(prof.v_score, p, "v");
  const std::string preset = p.string("ratio_preset");

  PlanFile plan;
  plan.method = "kvmix";
  plan.model = ctx.model_dir;
  plan.num_layers = ctx.model.config().num_hidden_layers;
  plan.calibration = params_node(p);
  YAML::Node profile(YAML::NodeType::Map);
  profile["data"] = faithful_data ? kFaithful : kHeldOut;
  profile["kind"] = prompts.kind;
  profile["prompts"] = prof.prompts;
  profile["available"] = prompts.available;
  if (prompts.skipped > 0) profile["skipped_short"] = prompts.skipped;
  profile["tokens"] = prof.tokens;
  profile["loss"] = opt.loss == ProfileLoss::Reference ? "reference (labels shifted twice, EOS last target)"
                                                       : "next-token cross-entropy";
  profile["mean_loss"] = fmt::format("{:.6g}", prof.mean_loss);
  profile["score"] = "mean over prompts of ||dLoss/dW||_F of k_proj / v_proj (one backward per prompt)";
  profile["dtype"] = dtype_name(ctx.model.dtype());
  profile["seconds"] = fmt::format("{:.3g}", prof.seconds);
  plan.extra.emplace_back("profile", profile);
  YAML::Node alloc(YAML::NodeType::Map);
  alloc["k"] = allocation_node(k);
  alloc["v"] = allocation_node(v);
  alloc["ratio_preset"] = preset;
  plan.extra.emplace_back("allocation", alloc);
  for (int64_t l = 0; l < plan.num_layers; ++l) {
    const auto i = static_cast<size_t>(l);
    PlanLayer row;
    row.layer = l;
    row.k_bits = k.bits[i];
    row.v_bits = v.bits[i];
    row.k_score = prof.k_score[i];
    row.v_score = prof.v_score[i];
    row.k_ratio = rpc_ratio(preset, k.bits[i]);
    row.v_ratio = rpc_ratio(preset, v.bits[i]);
    plan.layers.push_back(row);
  }
  write_plan_file(plan, ctx.out);
  if (ctx.progress) {
    for (const auto* a : {&k, &v})
      if (a->mode == "budget" && !a->budget.exact) fmt::print(stderr, "kvlab: note: kvmix: {}\n", a->budget.note);
    fmt::print(stderr, "kvmix: {} prompts ({}), K {:g} bits ({}), V {:g} bits ({})\n", prof.prompts,
               faithful_data ? "faithful" : "held-out", k.average, k.mode, v.average, v.mode);
  }
  return ctx.out;
}

CalibrationInfo profile_step() {
  return {"kvmix", "profile",
          "gradient importance of k_proj / v_proj per layer (one backward per prompt), bit allocation, plan file",
          profile_params(), "plan", run_profile};
}

KVLAB_REGISTER_CALIBRATION(profile_step)

}  // namespace
}  // namespace kvlab::kvmix
