#include "layer_clustering.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvlab::kvtuner {

std::vector<std::vector<double>> log_sensitivity_features(const std::vector<std::vector<double>>& sens) {
  double top = 0;
  for (const auto& row : sens)
    for (double s : row) top = std::max(top, s);
  const double floor = std::max(1e-12, 1e-6 * top);
  std::vector<std::vector<double>> f = sens;
  for (auto& row : f)
    for (double& s : row) s = std::log(std::max(s, floor));
  return f;
}

std::vector<std::vector<int64_t>> cluster_layers(const std::vector<std::vector<double>>& features, int64_t k) {
  const auto n = static_cast<int64_t>(features.size());
  std::vector<std::vector<int64_t>> clusters;
  for (int64_t l = 0; l < n; ++l) clusters.push_back({l});
  if (k <= 0 || k >= n) return clusters;

  std::vector<std::vector<double>> dist(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), 0.0));
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = a + 1; b < n; ++b) {
      double d2 = 0;
      const auto& fa = features[static_cast<size_t>(a)];
      const auto& fb = features[static_cast<size_t>(b)];
      for (size_t i = 0; i < fa.size(); ++i) d2 += (fa[i] - fb[i]) * (fa[i] - fb[i]);
      dist[static_cast<size_t>(a)][static_cast<size_t>(b)] = dist[static_cast<size_t>(b)][static_cast<size_t>(a)] =
          std::sqrt(d2);
    }
  auto linkage = [&](const std::vector<int64_t>& x, const std::vector<int64_t>& y) {
    double s = 0;
    for (int64_t a : x)
      for (int64_t b : y) s += dist[static_cast<size_t>(a)][static_cast<size_t>(b)];
    return s / static_cast<double>(x.size() * y.size());
  };
  while (static_cast<int64_t>(clusters.size()) > k) {
    size_t best_i = 0, best_j = 1;
    double best = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < clusters.size(); ++i)
      for (size_t j = i + 1; j < clusters.size(); ++j) {
        const double d = linkage(clusters[i], clusters[j]);
        if (d < best) best = d, best_i = i, best_j = j;  // strict: the first closest pair wins ties
      }
    auto& into = clusters[best_i];
    into.insert(into.end(), clusters[best_j].begin(), clusters[best_j].end());
    std::sort(into.begin(), into.end());
    clusters.erase(clusters.begin() + static_cast<std::ptrdiff_t>(best_j));
  }
  return clusters;  // each cluster keeps its lowest layer first, and merging preserves that order
}

}  // namespace kvlab::kvtuner
