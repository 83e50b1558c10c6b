#pragma once
// MixKVQ's query-aware key-channel salience, per layer and kv-head. The error a quantized key adds
// to an attention logit is sum_d q_d * (k_d - k'_d), so a channel matters when queries weight it
// (relevance I_d = mean |q_d|) and when it is hard to quantize (difficulty S_d = its quantizer
// step, range(k_d) / (2^B - 1)). Salience A_d = I_d * S_d; the most salient channels of each head
// are kept in full precision, the rest quantized per-channel.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace kvlab::mixkvq {

enum class Difficulty {
  Range,   // mean over aligned G-token blocks of max - min: the step of the per-channel quantizer
  AbsMax,  // max |k_d| over all calibration tokens
};
Difficulty parse_difficulty(const std::string& s);  // "range" | "absmax"

// Running statistics of one layer, fed with the queries and keys (after RoPE) it attends with.
class ChannelStats {
 public:
  ChannelStats(int64_t kv_heads, int64_t head_dim, int64_t block);

  void add_queries(const at::Tensor& q);  // [B, Hq, T, D]; Hq a multiple of kv_heads
  void add_keys(const at::Tensor& k);     // [B, Hkv, T, D]; blocks of `block` tokens (T < block: one block)

  at::Tensor relevance() const;                 // [Hkv, D] mean |q_d| over tokens and the group's query heads
  at::Tensor difficulty(Difficulty d) const;    // [Hkv, D] key range (or max |k|)
  int64_t query_rows() const { return q_rows_; }
  int64_t key_blocks() const { return blocks_; }

 private:
  int64_t heads_, dim_, block_;
  at::Tensor q_abs_sum_;  // [Hkv, D] fp64
  at::Tensor range_sum_;  // [Hkv, D] fp64
  at::Tensor abs_max_;    // [Hkv, D] fp64
  int64_t q_rows_ = 0, blocks_ = 0;
};

// A_d = relevance * difficulty / (2^bits - 1), [Hkv, D].
at::Tensor salience(const at::Tensor& relevance, const at::Tensor& difficulty, int bits);

// Channels kept exact per head for a fraction of head_dim: round(fraction * head_dim), at most
// head_dim - 1 (something must remain to quantize).
int64_t exact_count(double fraction, int64_t head_dim);

// The `count` most salient channels of every head, each list sorted by channel id. Ties go to the
// lower channel id. salience: [H, D].
std::vector<std::vector<int64_t>> top_channels(const at::Tensor& salience, int64_t count);

}  // namespace kvlab::mixkvq
