// kvlab search kvtuner --model DIR --calib FILE --pairs K8V8,K8V4,... --out DIR [--target-bits B]
//
// KVTuner's offline search on calibration text:
//   1. sensitivity: for every layer and candidate pair, the calibration loss (KL to the
//      full-precision model, or the log-perplexity increase) with only that layer quantized;
//   2. pruning, clustering and the exact Pareto front of (average bits, estimated loss), where a
//      plan's loss is estimated as the sum of its layers' single-layer losses (layer_search.h);
//   3. choice: of the front's plans at or under --target-bits, the `remeasure` with the most bits
//      are run for real with the whole plan applied, and the one with the least measured loss is
//      chosen (remeasure 0: the least estimated loss).
// Outputs in DIR: sensitivity.csv (the per-layer table), pareto.yaml / pareto.csv (the front with
// per-layer pairs, estimated and, where re-measured, measured loss) and plan.yaml (the chosen plan
// in the plan-file format, for `--method kvtuner --set plan=DIR/plan.yaml`); sensitivity.cache (the
// table at full precision, which a search beside it with another target reuses: sensitivity_cache.h).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "calibration_loss.h"
#include "kvlab/common/error.h"
#include "kvlab/common/progress.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/quant/calibration_data.h"
#include "kvlab/quant/plan_file.h"
#include "kvtuner_scheme.h"
#include "layer_search.h"
#include "sensitivity_cache.h"

namespace kvlab::kvtuner {
namespace {

const char* kDefaultPairs = "K8V8,K8V4,K4V4,K4V2,K2V4,K2V2";

std::vector<ParamSpec> search_params() {
  std::vector<ParamSpec> p = calibration_data_params(8, 512);
  p.push_back(ParamSpec::string("pairs", kDefaultPairs, "candidate (K bits, V bits) pairs, comma-separated"));
  p.push_back(ParamSpec::string("loss", "kl", "calibration loss: kl (mean KL to full precision) or ppl (log-ppl increase)",
                                {"kl", "ppl"}));
  p.push_back(ParamSpec::integer("clusters", 4, "layer clusters sharing a pair (0: every layer alone)", 0));
  p.push_back(ParamSpec::real("target_bits", 4.0, "pick the best plan at or under this mean of (k + v) / 2 bits", 1.0, 16.0));
  p.push_back(ParamSpec::integer("remeasure", 4, "front plans at or under the target run for real to pick one (0: estimates only)", 0));
  for (const auto& s : Scheme::params()) p.push_back(s);
  return p;
}

// Writes `text` to path through a temporary file, so an existing file is replaced whole or not at all.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << text;
    if (!f) fail("kvtuner search: cannot write {}", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail("kvtuner search: cannot write {}: {}", path, ec.message());
  }
}

std::string pair_names(const std::vector<BitPair>& pairs, const std::vector<size_t>& idx, const char* sep) {
  std::string s;
  for (size_t i = 0; i < idx.size(); ++i) s += (i ? sep : "") + pairs[idx[i]].name();
  return s;
}

YAML::Node name_list(const std::vector<BitPair>& pairs, const std::vector<size_t>& idx) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (size_t i : idx) n.push_back(pairs[i].name());
  n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}

struct Measured {
  std::vector<std::optional<PlanLoss>> front;  // per front point, when re-measured
};

std::string run_search(CalibrationContext& ctx) {
  const ParamSet& p = ctx.params;
  const ModelConfig& c = ctx.model.config();
  const auto L = static_cast<size_t>(c.num_hidden_layers);
  const std::vector<BitPair> pairs = parse_bit_pairs(p.string("pairs"), "--pairs");
  const LossKind kind = parse_loss_kind(p.string("loss"));
  const Scheme scheme = Scheme::from(p);
  // Fail on a scheme the model cannot hold before any measuring.
  for (const auto& pair : pairs) {
    CachePlan probe = scheme.plan(std::vector<BitPair>(L, pair));
    probe.validate(c.num_hidden_layers, c.head_dim);
  }
  const std::string out = ctx.out;
  if (std::filesystem::exists(out) && !std::filesystem::is_directory(out))
    fail("kvtuner search: --out {} is a file; it must be a folder (it receives plan.yaml, pareto.yaml, ...)", out);
  std::filesystem::create_directories(out);

  std::vector<std::vector<int64_t>> windows = load_calibration_windows(p, ctx.tokenizer);
  const std::string key = sensitivity_key(ctx.model, ctx.model_dir, p, windows);
  CalibrationLoss loss(ctx.model, std::move(windows));
  const int64_t tokens = loss.predicted_tokens();

  // 1. Sensitivity of every (layer, pair) with only that layer quantized, unless an earlier search
  //    that differed only in the target, remeasure or clusters measured it (sensitivity_cache.h).
  std::vector<std::vector<double>> sens(L, std::vector<double>(pairs.size()));
  std::string reused_from;
  std::optional<SensitivityTable> cached = find_sensitivity(out, ctx.reuse_dir, key, L, pairs.size(), &reused_from);
  SensitivityTable detail = cached ? *cached : SensitivityTable(L, std::vector<PlanLoss>(pairs.size()));
  if (cached) {
    for (size_t l = 0; l < L; ++l)
      for (size_t i = 0; i < pairs.size(); ++i) sens[l][i] = detail[l][i].value(kind);
    fmt::print("kvtuner sensitivity: {} layers x {} pairs reused from {} (same model, calibration tokens and "
               "parameters)\n", L, pairs.size(), reused_from);
    std::fflush(stdout);
  } else {
    Progress progress("kvtuner sensitivity", static_cast<int64_t>(L * pairs.size()), "plans", "tok", 10.0,
                      ctx.progress ? stderr : nullptr);
    for (size_t l = 0; l < L; ++l)
      for (size_t i = 0; i < pairs.size(); ++i) {
        std::vector<BitPair> layer_pairs(L, BitPair{16, 16});
        layer_pairs[l] = pairs[i];
        detail[l][i] = loss.measure(scheme.plan(layer_pairs));
        sens[l][i] = detail[l][i].value(kind);
        progress.advance(1, fmt::format("layer {} {} loss {:.4g}", l, pairs[i].name(), sens[l][i]), tokens);
      }
    progress.finish();
  }
  const std::string own_cache = (std::filesystem::path(out) / kSensitivityFile).string();
  if (!cached || reused_from != own_cache) write_atomically(own_cache, format_sensitivity(key, detail));

  // 2. Pruning, clustering, Pareto front.
  const LayerSearch search = search_layer_pairs(pairs, sens, p.integer("clusters"));
  fmt::print("{}\n", search.space.describe());
  std::fflush(stdout);
  std::vector<int64_t> cluster_of(L, 0);
  for (size_t ci = 0; ci < search.clusters.size(); ++ci)
    for (int64_t l : search.clusters[ci].layers) cluster_of[static_cast<size_t>(l)] = static_cast<int64_t>(ci);

  // 3. Re-measure the front's plans nearest the target from below; choose.
  const double target = p.real("target_bits");
  std::vector<size_t> under;
  for (size_t i = 0; i < search.front.size(); ++i)
    if (search.front[i].avg_bits <= target + 1e-9) under.push_back(i);
  Measured measured{std::vector<std::optional<PlanLoss>>(search.front.size())};
  const auto n_measure = std::min<size_t>(under.size(), static_cast<size_t>(p.integer("remeasure")));
  auto plan_of = [&](const PlanPoint& pt) {
    std::vector<BitPair> lp;
    for (size_t l = 0; l < L; ++l) lp.push_back(pairs[pt.layer_pair[l]]);
    return lp;
  };
  std::optional<size_t> chosen = best_at_or_under(search.front, target);
  if (n_measure > 0) {
    Progress progress("kvtuner re-measure", static_cast<int64_t>(n_measure), "plans", "tok", 10.0,
                      ctx.progress ? stderr : nullptr);
    for (size_t j = under.size() - n_measure; j < under.size(); ++j) {
      const size_t i = under[j];
      measured.front[i] = loss.measure(scheme.plan(plan_of(search.front[i])));
      if (!measured.front[*chosen] ||
          measured.front[i]->value(kind) < measured.front[*chosen]->value(kind))
        chosen = i;
      progress.advance(1, fmt::format("{:.3f} bits loss {:.4g}", search.front[i].avg_bits, measured.front[i]->value(kind)),
                       tokens);
    }
    progress.finish();
  }

  // Outputs: the sensitivity table and the front come first, so they exist even when no plan fits.
  std::string csv = "layer,pair,k_bits,v_bits,avg_bits,loss,kl_mean,nll_increase,kept,cluster\n";
  for (size_t l = 0; l < L; ++l)
    for (size_t i = 0; i < pairs.size(); ++i) {
      const bool kept = std::find(search.kept[l].begin(), search.kept[l].end(), i) != search.kept[l].end();
      const PlanLoss& d = detail[l][i];
      csv += fmt::format("{},{},{},{},{},{:.9g},{:.9g},{:.9g},{},{}\n", l, pairs[i].name(), pairs[i].k, pairs[i].v,
                         pairs[i].avg_bits(), sens[l][i], d.kl_mean, d.mean_nll - d.ref_nll, kept ? 1 : 0, cluster_of[l]);
    }
  write_atomically(out + "/sensitivity.csv", csv);

  YAML::Node front(YAML::NodeType::Sequence);
  std::string front_csv = "point,avg_bits,estimated_loss,measured_loss,pairs\n";
  for (size_t i = 0; i < search.front.size(); ++i) {
    const PlanPoint& pt = search.front[i];
    YAML::Node n(YAML::NodeType::Map);
    n["avg_bits"] = yaml_number(pt.avg_bits);
    n["estimated_loss"] = yaml_number(pt.loss);
    if (measured.front[i]) n["measured_loss"] = yaml_number(measured.front[i]->value(kind));
    n["pairs"] = name_list(pairs, pt.layer_pair);
    n.SetStyle(YAML::EmitterStyle::Flow);
    front.push_back(n);
    front_csv += fmt::format("{},{},{:.9g},{},{}\n", i, pt.avg_bits, pt.loss,
                             measured.front[i] ? fmt::format("{:.9g}", measured.front[i]->value(kind)) : "",
                             pair_names(pairs, pt.layer_pair, " "));
  }
  YAML::Node space(YAML::NodeType::Map);
  space["raw"] = yaml_number(search.space.raw);
  space["after_pruning"] = yaml_number(search.space.pruned);
  space["after_clustering"] = yaml_number(search.space.clustered);
  space["clusters"] = search.space.clusters;
  space.SetStyle(YAML::EmitterStyle::Flow);
  YAML::Node clusters(YAML::NodeType::Sequence);
  for (const auto& cl : search.clusters) {
    YAML::Node n(YAML::NodeType::Map);
    n["layers"] = cl.layers;
    n["layers"].SetStyle(YAML::EmitterStyle::Flow);
    n["candidates"] = name_list(pairs, cl.pairs);
    n.SetStyle(YAML::EmitterStyle::Flow);
    clusters.push_back(n);
  }
  {
    YAML::Emitter e;
    e.SetDoublePrecision(7);
    e << YAML::BeginMap << YAML::Key << "loss" << YAML::Value << p.string("loss");
    e << YAML::Key << "calibration_tokens" << YAML::Value << tokens;
    e << YAML::Key << "search_space" << YAML::Value << space;
    e << YAML::Key << "clusters" << YAML::Value << clusters;
    e << YAML::Key << "front" << YAML::Value << front << YAML::EndMap;
    write_atomically(out + "/pareto.yaml", std::string(e.c_str()) + "\n");
  }
  write_atomically(out + "/pareto.csv", front_csv);

  if (!chosen) {
    fail("kvtuner search: no plan on the front is at or under --target-bits {} (the cheapest is {:.4g} bits: {}); "
         "the front is in {}/pareto.yaml",
         target, search.front.front().avg_bits, pair_names(pairs, search.front.front().layer_pair, " "), out);
  }
  const PlanPoint& pick = search.front[*chosen];
  PlanFile plan;
  plan.method = "kvtuner";
  plan.model = ctx.model_dir;
  plan.calibration = p.to_yaml();
  YAML::Node choice(YAML::NodeType::Map);
  choice["target_bits"] = yaml_number(target);
  choice["avg_bits"] = yaml_number(pick.avg_bits);
  choice["estimated_loss"] = yaml_number(pick.loss);
  if (measured.front[*chosen]) {
    choice["measured_loss"] = yaml_number(measured.front[*chosen]->value(kind));
    choice["measured_kl"] = yaml_number(measured.front[*chosen]->kl_mean);
    choice["measured_nll_increase"] = yaml_number(measured.front[*chosen]->mean_nll - measured.front[*chosen]->ref_nll);
  }
  choice["front_point"] = *chosen;
  choice.SetStyle(YAML::EmitterStyle::Flow);
  plan.extra = YAML::Node(YAML::NodeType::Map);
  plan.extra["loss"] = p.string("loss");
  plan.extra["choice"] = choice;
  plan.extra["search_space"] = space;
  plan.extra["pareto"] = front;
  for (size_t l = 0; l < L; ++l) {
    PlanFileLayer pl;
    const BitPair bp = pairs[pick.layer_pair[l]];
    pl.k_bits = bp.k, pl.v_bits = bp.v;
    pl.node = YAML::Node(YAML::NodeType::Map);
    pl.node["cluster"] = cluster_of[l];
    pl.node["loss"] = yaml_number(sens[l][pick.layer_pair[l]]);  // single-layer loss of the chosen pair
    plan.layers.push_back(pl);
  }
  const std::string path = out + "/plan.yaml";
  plan.save(path);
  return path;
}

CalibrationInfo search_info() {
  return {"kvtuner", "search",
          "KVTuner search: per-layer pair sensitivities, pruning, clustering, Pareto front; writes DIR/plan.yaml",
          search_params(), "plan", run_search};
}

KVLAB_REGISTER_CALIBRATION(search_info)

}  // namespace
}  // namespace kvlab::kvtuner
