// Plain decode attention over a packed cache: dequantize everything, then textbook attention.
#include <algorithm>
#include <cmath>
#include <vector>

#include <c10/util/BFloat16.h>

#include "kvlab/kernels/packed_attention.h"

namespace kvlab::kernels::reference {
namespace {

// Element i of full-precision rows, as a float.
float row_value(const Rows& r, int64_t i) {
  switch (r.type) {
    case RowType::F16: return static_cast<float>(static_cast<const c10::Half*>(r.data)[i]);
    case RowType::BF16: return static_cast<float>(static_cast<const c10::BFloat16*>(r.data)[i]);
    default: return static_cast<const float*>(r.data)[i];
  }
}

// Textbook attention of n_q queries over S rows of keys and values ([S, D] each), in double.
void attend(const float* q, int64_t n_q, int64_t D, const std::vector<float>& keys, const std::vector<float>& values,
            int64_t S, float softmax_scale, float* out) {
  std::vector<double> p(S);
  for (int64_t h = 0; h < n_q; ++h) {
    double mx = -INFINITY;
    for (int64_t t = 0; t < S; ++t) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[h * D + d]) * keys[t * D + d];
      p[t] = dot * softmax_scale;
      mx = std::max(mx, p[t]);
    }
    double sum = 0;
    for (int64_t t = 0; t < S; ++t) sum += (p[t] = std::exp(p[t] - mx));
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0;
      for (int64_t t = 0; t < S; ++t) acc += p[t] * values[t * D + d];
      out[h * D + d] = static_cast<float>(acc / sum);
    }
  }
}

// Rows [tokens, D] of the packed part followed by the full-precision rows.
std::vector<float> materialize(const PackedStream& s, int64_t D_all, const Rows& full) {
  const int64_t t_full = full.tokens;
  std::vector<float> rows((s.tokens + t_full) * D_all);
  const int64_t D = D_all - s.exact_dims;  // channels in the codes
  std::vector<float> deq(s.tokens * D);
  if (s.tokens > 0) {
    const bool f16 = s.param == ParamType::F16;
    const bool per_token = s.granularity == Granularity::PerToken;
    if (f16) {
      const auto* sc = static_cast<const c10::Half*>(s.scales);
      const auto* z = static_cast<const c10::Half*>(s.zeros);
      if (per_token) reference::dequantize_per_token<c10::Half>(s.codes, sc, z, s.tokens, D, s.shape, deq.data(), D);
      else reference::dequantize_per_channel<c10::Half>(s.codes, sc, z, s.tokens, D, s.shape, deq.data(), D);
    } else {
      const auto* sc = static_cast<const float*>(s.scales);
      const auto* z = static_cast<const float*>(s.zeros);
      if (per_token) reference::dequantize_per_token<float>(s.codes, sc, z, s.tokens, D, s.shape, deq.data(), D);
      else reference::dequantize_per_channel<float>(s.codes, sc, z, s.tokens, D, s.shape, deq.data(), D);
    }
  }
  for (int64_t t = 0; t < s.tokens; ++t)
    for (int64_t d = 0; d < D_all; ++d)
      rows[t * D_all + d] = d < D ? deq[t * D + d] : row_value(Rows(s.exact, s.exact_type, s.tokens), t * s.exact_dims + d - D);
  for (int64_t i = 0; i < t_full * D_all; ++i) rows[s.tokens * D_all + i] = row_value(full, i);
  return rows;
}

}  // namespace

void packed_decode_attention(const float* q, int64_t n_q, int64_t D, const PackedStream& k, const Rows& k_full,
                             const PackedStream& v, const Rows& v_full, float softmax_scale, float* out) {
  const int64_t S = k.tokens + k_full.tokens;
  attend(q, n_q, D, materialize(k, D, k_full), materialize(v, D, v_full), S, softmax_scale, out);
}

void full_decode_attention(const float* q, int64_t n_q, int64_t D, const Rows& k, const Rows& v, float softmax_scale,
                           float* out) {
  const PackedStream none;
  attend(q, n_q, D, materialize(none, D, k), materialize(none, D, v), k.tokens, softmax_scale, out);
}

}  // namespace kvlab::kernels::reference
