#pragma once
// A layer's (K bits, V bits) pair, written as KVTuner names them: "K8V4", or "KV4" for K4V4.
#include <string>
#include <vector>

namespace kvlab::kvtuner {

struct BitPair {
  int k = 16, v = 16;
  // KVTuner's "equivalent bits" of a layer: the mean code width of its K and V.
  double avg_bits() const { return 0.5 * (k + v); }
  int bit_sum() const { return k + v; }
  std::string name() const;  // "K8V4"
  bool operator==(const BitPair& o) const { return k == o.k && v == o.v; }
};

// "K8V4", "k4v2", "KV8"; bits in {1, 2, 3, 4, 8, 16}. `where` prefixes errors.
BitPair parse_bit_pair(const std::string& text, const std::string& where);
// A comma-separated list of distinct pairs, e.g. "K8V8,K8V4,K4V4".
std::vector<BitPair> parse_bit_pairs(const std::string& list, const std::string& where);

}  // namespace kvlab::kvtuner
