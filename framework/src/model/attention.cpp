#include "kvlab/model/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "kvlab/common/error.h"

namespace kvlab {

at::Tensor causal_gqa_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values) {
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Hkv = keys.size(1), S = keys.size(2);
  if (Hq % Hkv != 0) fail("attention: {} query heads are not a multiple of {} kv heads", Hq, Hkv);
  if (S < T) fail("attention: {} keys cannot serve {} new queries", S, T);
  const int64_t G = Hq / Hkv;
  const auto work = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;

  // Query heads h = kv * G + g share kv-head kv: view them as G * T rows of that kv-head.
  at::Tensor qg = q.to(work).reshape({B, Hkv, G * T, D});
  at::Tensor scores = at::matmul(qg, keys.to(work).transpose(-1, -2));  // [B, Hkv, G*T, S]
  scores.mul_(1.0 / std::sqrt(static_cast<double>(D)));
  if (T > 1) {
    // Row r is query t = r % T at absolute slot S - T + t; it may see keys 0 .. S - T + t.
    at::Tensor t = at::arange(T, q.options().dtype(at::kLong)).repeat({G});        // [G*T]
    at::Tensor s = at::arange(S, q.options().dtype(at::kLong));                     // [S]
    at::Tensor masked = s.unsqueeze(0) > (t.unsqueeze(1) + (S - T));                // [G*T, S]
    scores = scores.masked_fill(masked, -std::numeric_limits<float>::infinity());
  }
  at::Tensor probs = at::softmax(scores, -1);
  at::Tensor out = at::matmul(probs, values.to(work));  // [B, Hkv, G*T, D]
  return out.reshape({B, Hq, T, D}).to(q.scalar_type());
}

}  // namespace kvlab
