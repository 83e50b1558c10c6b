#include "layer_search.h"

#include <fmt/format.h>

#include <cmath>

#include "kvlab/common/error.h"
#include "layer_clustering.h"
#include "pair_pruning.h"
#include "pareto_front.h"

namespace kvlab::kvtuner {

std::string SearchSpace::describe() const {
  return fmt::format("search space: {:.6g} combinations -> {:.6g} after pruning -> {:.6g} after clustering ({} clusters)",
                     raw, pruned, clustered, clusters);
}

LayerSearch search_layer_pairs(const std::vector<BitPair>& pairs, const std::vector<std::vector<double>>& sens,
                               int64_t num_clusters) {
  const size_t L = sens.size();
  if (L == 0) fail("kvtuner search: no layers");
  for (size_t l = 0; l < L; ++l) {
    if (sens[l].size() != pairs.size())
      fail("kvtuner search: layer {} has {} sensitivities for {} pairs", l, sens[l].size(), pairs.size());
    for (double s : sens[l])
      if (!std::isfinite(s)) fail("kvtuner search: layer {} has a non-finite sensitivity ({})", l, s);
  }
  LayerSearch r;
  r.space.raw = std::pow(static_cast<double>(pairs.size()), static_cast<double>(L));
  r.space.pruned = 1;
  for (size_t l = 0; l < L; ++l) {
    r.kept.push_back(undominated_pairs(pairs, sens[l]));
    r.space.pruned *= static_cast<double>(r.kept.back().size());
  }

  const auto groups = cluster_layers(log_sensitivity_features(sens), num_clusters);
  std::vector<std::vector<Option>> options;
  r.space.clustered = 1;
  for (const auto& layers : groups) {
    std::vector<double> summed(pairs.size(), 0.0);
    for (int64_t l : layers)
      for (size_t p = 0; p < pairs.size(); ++p) summed[p] += sens[static_cast<size_t>(l)][p];
    ClusterCandidates c{layers, undominated_pairs(pairs, summed)};
    std::vector<Option> opts;
    for (size_t p : c.pairs)
      opts.push_back({static_cast<int64_t>(layers.size()) * pairs[p].bit_sum(), summed[p]});
    options.push_back(std::move(opts));
    r.space.clustered *= static_cast<double>(c.pairs.size());
    r.clusters.push_back(std::move(c));
  }
  r.space.clusters = static_cast<int64_t>(r.clusters.size());

  for (const FrontPoint& f : additive_pareto_front(options)) {
    PlanPoint p;
    p.avg_bits = static_cast<double>(f.bits) / (2.0 * static_cast<double>(L));
    p.loss = f.loss;
    p.layer_pair.assign(L, 0);
    for (size_t c = 0; c < r.clusters.size(); ++c)
      for (int64_t l : r.clusters[c].layers) p.layer_pair[static_cast<size_t>(l)] = r.clusters[c].pairs[f.choice[c]];
    r.front.push_back(std::move(p));
  }
  return r;
}

std::optional<size_t> best_at_or_under(const std::vector<PlanPoint>& front, double target_bits) {
  std::optional<size_t> best;
  for (size_t i = 0; i < front.size(); ++i)
    if (front[i].avg_bits <= target_bits + 1e-9 && (!best || front[i].loss < front[*best].loss)) best = i;
  return best;
}

}  // namespace kvlab::kvtuner
