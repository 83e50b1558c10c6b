#include "kvlab/model/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kvlab/common/error.h"

namespace kvlab {

at::Tensor causal_gqa_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values) {
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Hkv = keys.size(1), S = keys.size(2);
  if (Hq % Hkv != 0) fail("attention: {} query heads are not a multiple of {} kv heads", Hq, Hkv);
  if (S < T) fail("attention: {} keys cannot serve {} new queries", S, T);
  const int64_t G = Hq / Hkv;
  const auto work = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const at::Tensor kt = keys.to(work).transpose(-1, -2);  // [B, Hkv, D, S]
  const at::Tensor vw = values.to(work);                  // [B, Hkv, S, D]

  // Queries t0 .. t0 + n - 1 of every head h = kv * G + g, as G * n rows of their kv-head.
  auto block = [&](const at::Tensor& qg, int64_t t0, int64_t n) {  // qg [B, Hkv, G * n, D]
    at::Tensor scores = at::matmul(qg, kt);                         // [B, Hkv, G*n, S]
    scores.mul_(scale);
    if (T > 1) {
      // Row r is query t = t0 + r % n at absolute slot S - T + t; it may see keys 0 .. S - T + t.
      at::Tensor t = at::arange(t0, t0 + n, q.options().dtype(at::kLong)).repeat({G});  // [G*n]
      at::Tensor s = at::arange(S, q.options().dtype(at::kLong));                      // [S]
      at::Tensor masked = s.unsqueeze(0) > (t.unsqueeze(1) + (S - T));                 // [G*n, S]
      scores = scores.masked_fill(masked, -std::numeric_limits<float>::infinity());
    }
    return at::matmul(at::softmax(scores, -1), vw);  // [B, Hkv, G*n, D]
  };
  // Blocks of queries whose scores stay within kScoreBlock floats (a long prefill would otherwise
  // hold B * Hq * T * S scores, several times, at once).
  constexpr int64_t kScoreBlock = int64_t{1} << 22;  // 16 MiB of fp32 (each block makes a few such tensors)
  const int64_t per_query = std::max<int64_t>(1, B * Hq * S);
  const int64_t n = std::max<int64_t>(1, kScoreBlock / per_query);
  if (n >= T) return block(q.to(work).reshape({B, Hkv, G * T, D}), 0, T).reshape({B, Hq, T, D}).to(q.scalar_type());
  const at::Tensor q5 = q.to(work).reshape({B, Hkv, G, T, D});
  at::Tensor out = at::empty({B, Hkv, G, T, D}, q5.options());
  for (int64_t t0 = 0; t0 < T; t0 += n) {
    const int64_t m = std::min(n, T - t0);
    out.narrow(3, t0, m).copy_(block(q5.narrow(3, t0, m).reshape({B, Hkv, G * m, D}), t0, m).view({B, Hkv, G, m, D}));
  }
  return out.view({B, Hq, T, D}).to(q.scalar_type());
}

}  // namespace kvlab
