#pragma once
// Inter-layer clustering (KVTuner step b): layers whose sensitivity to the candidate pairs looks
// alike share one pair, which shrinks the search space from a product over layers to a product
// over clusters. Deterministic agglomerative clustering with average linkage on Euclidean
// distances between the layers' log-sensitivity vectors (KVTuner's paper uses DBSCAN on its error
// vectors; a fixed cluster count is easier to budget and reproduces exactly).
#include <cstdint>
#include <vector>

namespace kvlab::kvtuner {

// sens[l][p]: loss of layer l under pair p. Features are log(max(s, floor)) with floor a tiny
// positive fraction of the largest loss, so zero or negative losses (nothing measurable) compare
// as "insensitive".
std::vector<std::vector<double>> log_sensitivity_features(const std::vector<std::vector<double>>& sens);

// Merges the two closest clusters (average linkage; ties: lowest layer indices) until `k` remain.
// k <= 0 or k >= layers: every layer alone. Clusters are sorted layer lists, ordered by first layer.
std::vector<std::vector<int64_t>> cluster_layers(const std::vector<std::vector<double>>& features, int64_t k);

}  // namespace kvlab::kvtuner
