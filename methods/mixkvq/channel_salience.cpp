#include "channel_salience.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvlab/common/error.h"

namespace kvlab::mixkvq {

Difficulty parse_difficulty(const std::string& s) {
  if (s == "range") return Difficulty::Range;
  if (s == "absmax") return Difficulty::AbsMax;
  fail("mixkvq: difficulty '{}' is not range or absmax", s);
}

ChannelStats::ChannelStats(int64_t kv_heads, int64_t head_dim, int64_t block)
    : heads_(kv_heads), dim_(head_dim), block_(block) {
  if (block_ <= 0) fail("mixkvq: key block (group) must be positive, got {}", block_);
  q_abs_sum_ = at::zeros({heads_, dim_}, at::kDouble);
  range_sum_ = at::zeros({heads_, dim_}, at::kDouble);
  abs_max_ = at::zeros({heads_, dim_}, at::kDouble);
}

void ChannelStats::add_queries(const at::Tensor& q) {
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2);
  if (q.size(3) != dim_ || Hq % heads_ != 0)
    fail("mixkvq: queries [{}, {}, {}, {}] do not fit {} kv heads of {} channels", B, Hq, T, q.size(3), heads_, dim_);
  const int64_t G = Hq / heads_;
  // Query head h * G + g belongs to kv head h (the grouping GQA attention uses).
  at::Tensor a = q.detach().to(at::kDouble).abs().reshape({B, heads_, G, T, dim_});
  q_abs_sum_ += a.sum(at::IntArrayRef{0, 2, 3});
  q_rows_ += B * G * T;
}

void ChannelStats::add_keys(const at::Tensor& k) {
  const int64_t B = k.size(0), T = k.size(2);
  if (k.size(1) != heads_ || k.size(3) != dim_)
    fail("mixkvq: keys [{}, {}, {}, {}] do not fit {} kv heads of {} channels", B, k.size(1), T, k.size(3), heads_, dim_);
  at::Tensor x = k.detach().to(at::kDouble);
  abs_max_ = at::maximum(abs_max_, x.abs().amax(at::IntArrayRef{0, 2}));
  const int64_t size = T < block_ ? T : block_;
  const int64_t nb = T / size;
  if (nb == 0) return;
  at::Tensor blocks = x.narrow(2, 0, nb * size).reshape({B, heads_, nb, size, dim_});
  range_sum_ += (blocks.amax(3) - blocks.amin(3)).sum(at::IntArrayRef{0, 2});
  blocks_ += B * nb;
}

at::Tensor ChannelStats::relevance() const {
  if (q_rows_ == 0) fail("mixkvq: no queries were recorded");
  return q_abs_sum_ / static_cast<double>(q_rows_);
}

at::Tensor ChannelStats::difficulty(Difficulty d) const {
  if (d == Difficulty::AbsMax) return abs_max_.clone();
  if (blocks_ == 0) fail("mixkvq: no keys were recorded");
  return range_sum_ / static_cast<double>(blocks_);
}

at::Tensor salience(const at::Tensor& relevance, const at::Tensor& difficulty, int bits) {
  return relevance * difficulty / (std::pow(2.0, bits) - 1.0);
}

int64_t exact_count(double fraction, int64_t head_dim) {
  if (fraction < 0 || fraction >= 1) fail("mixkvq: exact fraction {} must be in [0, 1)", fraction);
  const auto n = static_cast<int64_t>(std::floor(fraction * static_cast<double>(head_dim) + 0.5));
  return std::min(n, head_dim - 1);
}

std::vector<std::vector<int64_t>> top_channels(const at::Tensor& salience, int64_t count) {
  at::Tensor s = salience.to(at::kDouble).contiguous();
  const int64_t H = s.size(0), D = s.size(1);
  if (count < 0 || count > D) fail("mixkvq: cannot keep {} of {} channels", count, D);
  const double* p = s.data_ptr<double>();
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) {
    std::vector<int64_t> idx(static_cast<size_t>(D));
    std::iota(idx.begin(), idx.end(), 0);
    const double* row = p + h * D;
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
    idx.resize(static_cast<size_t>(count));
    std::sort(idx.begin(), idx.end());
    out[static_cast<size_t>(h)] = idx;
  }
  return out;
}

}  // namespace kvlab::mixkvq
