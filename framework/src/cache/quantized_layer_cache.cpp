#include "kvlab/cache/quantized_layer_cache.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "decode_rows.h"
#include "kvlab/cache/cuda_backend.h"
#include "kvlab/cache/rotating_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/model/attention.h"

namespace kvlab {

QuantizedLayerCache::QuantizedLayerCache(const LayerPlan& plan, MultiTokenMode mode)
    : keys_(plan.k, plan.k_flush), values_(plan.v, plan.v_flush), mode_(mode) {}

CacheBytes QuantizedLayerCache::bytes() const { return {keys_.bytes(), values_.bytes()}; }

int64_t QuantizedLayerCache::capacity_bytes() const { return keys_.capacity_bytes() + values_.capacity_bytes(); }

void QuantizedLayerCache::reset() {
  keys_.reset();
  values_.reset();
}

// [history packed (dequantized) ; history full precision] in fp32 (what attention computes in:
// dequantized values are not rounded to the model's dtype), for multi-token attention.
static at::Tensor stored(const QuantizedStream& s) {
  at::Tensor full = s.full().to(at::kFloat);
  if (s.packed_tokens() == 0) return full;
  at::Tensor deq = s.dequantized().to(full.device());
  return full.size(2) == 0 ? deq : at::cat({deq, full}, 2);
}

void QuantizedLayerCache::fill(const at::Tensor& k, const at::Tensor& v) {
  keys_.append(k);
  values_.append(v);
  keys_.flush();
  values_.flush();
}

at::Tensor QuantizedLayerCache::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t T = q.size(2);
  if (T == 1 || mode_ == MultiTokenMode::Quantized) {
    fill(k, v);
    if (T == 1) return decode_attention(q);
    return causal_gqa_attention(q, stored(keys_), stored(values_));
  }
  if (mode_ == MultiTokenMode::TokenByToken) return token_by_token_attention(q, k, v);
  // FullPrecision: this chunk's own tokens are read exactly, the history as stored.
  at::Tensor out;
  if (keys_.tokens() == 0) {
    out = causal_gqa_attention(q, k, v);
  } else {
    out = causal_gqa_attention(q, at::cat({stored(keys_), k.to(at::kFloat)}, 2),
                               at::cat({stored(values_), v.to(at::kFloat)}, 2));
  }
  keys_.append(k);
  values_.append(v);
  keys_.flush();
  values_.flush();
  return out;
}

at::Tensor QuantizedLayerCache::decode_attention(const at::Tensor& q) {
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3);
  const int64_t Hkv = keys_.full().size(1);
  const int64_t G = Hq / Hkv;
  const int64_t S = keys_.tokens();
  if (values_.tokens() != S) fail("kv cache: {} keys but {} values", S, values_.tokens());
  // Exact channels (MixKVQ) go through the same kernel: each head's channels are put in the
  // packed layout's order (quantized ones, then exact ones) for q and the full-precision rows, the
  // kernel reads the packed tokens' exact channels beside their codes, and the output is put back.
  const bool k_exact = keys_.has_exact_channels(), v_exact = values_.has_exact_channels();
  auto reorder = [](const at::Tensor& x, const at::Tensor& order) {  // x [B, H, n, D], order [H, D]
    return at::gather(x, 3, order.view({1, order.size(0), 1, order.size(1)}).expand_as(x));
  };
  at::Tensor qf = q.to(at::kFloat).reshape({B, Hkv, G, D});
  // The full-precision parts are read in the dtype they are stored in (views of the buffers); the
  // CUDA kernel reads the model's dtype directly and takes the exact channels as fp32 rows.
  const bool cuda = q.is_cuda();
  at::Tensor kf = keys_.full();    // [B, Hkv, tk, D]
  at::Tensor vf = values_.full();  // [B, Hkv, tv, D]
  const bool readable = cuda || cache_detail::kernel_row_dtype(kf.scalar_type());
  if (!readable) kf = kf.to(at::kFloat), vf = vf.to(at::kFloat);
  at::Tensor v_order, k_rows, v_rows;  // fp32 copies of exact channels, only where the kernel needs them
  if (k_exact) {
    const at::Tensor k_order = keys_.channel_order();
    qf = reorder(qf, k_order), kf = reorder(kf, k_order);
    if (!readable || cuda) k_rows = keys_.exact_rows();
  }
  if (v_exact) {
    v_order = values_.channel_order();
    vf = reorder(vf, v_order);
    if (!readable || cuda) v_rows = values_.exact_rows();
  }
  if (cuda) {
    at::Tensor out = cuda_backend::decode_attention(qf, keys_.layout(), kf, k_rows, values_.layout(), vf, v_rows,
                                                    1.0f / std::sqrt(static_cast<float>(D)));
    if (v_exact) out = at::empty_like(out).scatter_(3, v_order.view({1, Hkv, 1, D}).expand_as(out), out);
    return out.view({B, Hq, 1, D}).to(q.scalar_type());
  }
  qf = qf.contiguous();
  if (kf.stride(3) != 1 || kf.stride(2) != D) kf = kf.contiguous();
  if (vf.stride(3) != 1 || vf.stride(2) != D) vf = vf.contiguous();
  const int64_t ek = keys_.spec().exact_count(), ev = values_.spec().exact_count();
  const int64_t pk = keys_.packed_tokens(), pv = values_.packed_tokens();
  at::Tensor out = at::empty({B, Hkv, G, D}, at::kFloat);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float* qp = qf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    float* workspace = cache_detail::thread_scratch(G * S);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / Hkv, h = bh % Hkv;
      kernels::PackedStream ks = keys_.packed_view(b, h), vs = values_.packed_view(b, h);
      if (k_rows.defined() && pk > 0) ks.exact = k_rows.data_ptr<float>() + bh * pk * ek, ks.exact_type = kernels::RowType::F32;
      if (v_rows.defined() && pv > 0) vs.exact = v_rows.data_ptr<float>() + bh * pv * ev, vs.exact_type = kernels::RowType::F32;
      kernels::packed_decode_attention(qp + bh * G * D, G, D, ks, cache_detail::rows_of(kf, b, h), vs,
                                       cache_detail::rows_of(vf, b, h), scale, op + bh * G * D, workspace);
    }
  });
  if (v_exact) out = at::empty_like(out).scatter_(3, v_order.view({1, Hkv, 1, D}).expand_as(out), out);
  return out.view({B, Hq, 1, D}).to(q.scalar_type());
}

// Token-by-token semantics in one pass. Let P_s(t) be the number of packed tokens of stream s after
// the t-th new token's step (QuantizedStream::schedule). Query t sees key j packed iff
// j < P_k(t), else exact; the same for values. Packing is deterministic per token (per-token groups)
// or per aligned block of G tokens (per-channel groups), so each token's packed value is the same
// whenever it is packed: quantize once, then mask. Queries are taken in slices whose scores stay
// within 16 MiB (a long window would otherwise hold several [G * T, S] tensors at once).
at::Tensor QuantizedLayerCache::token_by_token_attention(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v) {
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), G = Hq / Hkv;
  const int64_t past = keys_.tokens();
  const int64_t S = past + T;
  const std::vector<int64_t> pk = keys_.schedule(T), pv = values_.schedule(T);

  // Exact K/V of every token: the stored history (its full-precision part is exact) + the new ones.
  auto after = [](const at::Tensor& history, const at::Tensor& x) {  // history is undefined before the first call
    return history.defined() ? at::cat({history, x}, 2) : x;
  };
  const auto f32 = at::kFloat;
  const at::Tensor k_exact = after(keys_.full(), k).to(f32);  // tokens [keys_.packed .. S)
  const at::Tensor v_exact = after(values_.full(), v).to(f32);
  const int64_t k_packed0 = keys_.packed_tokens(), v_packed0 = values_.packed_tokens();
  keys_.append(k);
  values_.append(v);
  keys_.quantize_oldest(pk.back() - k_packed0);
  values_.quantize_oldest(pv.back() - v_packed0);
  // Packed versions of tokens [0, P(T-1)), fp32.
  const at::Tensor k_q = keys_.dequantized(), v_q = values_.dequantized();

  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const auto lopt = at::TensorOptions().dtype(at::kLong).device(q.device());
  const at::Tensor pk_all = at::tensor(pk, lopt), pv_all = at::tensor(pv, lopt);
  const at::Tensor j = at::arange(S, lopt).unsqueeze(0);  // [1, S]
  const int64_t n_exact = S - k_packed0, n_pk = k_q.size(2), n_pv = v_q.size(2);
  const at::Tensor q5 = q.to(f32).reshape({B, Hkv, G, T, D});

  // Queries t0 .. t0 + m - 1 of every head, as G * m rows of their kv-head: [B, Hkv, G*m, D] out.
  auto slice = [&](int64_t t0, int64_t m) {
    const at::Tensor qg = q5.narrow(3, t0, m).reshape({B, Hkv, G * m, D});
    // Scores against the exact keys (tokens k_packed0..S) and the packed ones (0..P_k(T-1)).
    const at::Tensor s_exact = at::matmul(qg, k_exact.transpose(-1, -2)).mul_(scale);  // [B,Hkv,G*m,n_exact]
    const at::Tensor t_idx = at::arange(t0, t0 + m, lopt).repeat({G});                   // row -> t
    const at::Tensor pk_t = pk_all.index_select(0, t_idx).unsqueeze(1);                 // [G*m, 1]
    const at::Tensor pv_t = pv_all.index_select(0, t_idx).unsqueeze(1);
    const at::Tensor causal = j <= (t_idx.unsqueeze(1) + past);                          // [G*m, S]
    const at::Tensor use_packed_v = j < pv_t;
    // Assemble scores over all S tokens: packed where j < P_k(t), exact otherwise, -inf beyond t.
    at::Tensor scores = at::full({B, Hkv, G * m, S}, -std::numeric_limits<float>::infinity(), qg.options());
    scores.narrow(3, k_packed0, n_exact).copy_(s_exact);
    if (n_pk > 0) {
      const at::Tensor s_packed = at::matmul(qg, k_q.transpose(-1, -2)).mul_(scale);  // [B,Hkv,G*m,P_k]
      at::Tensor region = scores.narrow(3, 0, n_pk);
      region.copy_(at::where((j < pk_t).narrow(1, 0, n_pk), s_packed, region));
    }
    scores.masked_fill_(causal.logical_not(), -std::numeric_limits<float>::infinity());
    const at::Tensor probs = at::softmax(scores, -1);  // [B, Hkv, G*m, S]
    // Values: packed where j < P_v(t), exact otherwise.
    at::Tensor p_exact = probs.narrow(3, v_packed0, S - v_packed0);
    if (n_pv > v_packed0) {
      // Tokens packed during this chunk: their exact share is where they are not yet packed.
      p_exact = p_exact * use_packed_v.narrow(1, v_packed0, S - v_packed0).logical_not().to(f32);
    }
    at::Tensor out = at::matmul(p_exact, v_exact);
    if (n_pv > 0) out = out + at::matmul(probs.narrow(3, 0, n_pv) * use_packed_v.narrow(1, 0, n_pv).to(f32), v_q);
    return out;
  };
  constexpr int64_t kScoreBlock = int64_t{1} << 22;  // floats: 16 MiB (a slice makes a few such tensors)
  const int64_t rows = std::max<int64_t>(1, kScoreBlock / std::max<int64_t>(1, B * Hq * S));
  if (rows >= T) return slice(0, T).reshape({B, Hq, T, D}).to(q.scalar_type());
  at::Tensor out = at::empty({B, Hkv, G, T, D}, q5.options());
  for (int64_t t0 = 0; t0 < T; t0 += rows) {
    const int64_t m = std::min(rows, T - t0);
    out.narrow(3, t0, m).copy_(slice(t0, m).view({B, Hkv, G, m, D}));
  }
  return out.view({B, Hq, T, D}).to(q.scalar_type());
}

MultiTokenMode multi_token_mode(PrefillAttention p) {
  return p == PrefillAttention::FullPrecision ? MultiTokenMode::FullPrecision : MultiTokenMode::Quantized;
}

KvCache make_cache(const CachePlan& plan, MultiTokenMode mode) {
  return KvCache(static_cast<int64_t>(plan.layers.size()), [&](int64_t l) -> std::unique_ptr<LayerCache> {
    const LayerPlan& lp = plan.layers[static_cast<size_t>(l)];
    if (!lp.k.quantized() && !lp.v.quantized()) return std::make_unique<FullPrecisionLayerCache>();
    std::unique_ptr<LayerCache> cache = std::make_unique<QuantizedLayerCache>(lp, mode);
    // Rotation only where it changes what is quantized (a 16-bit stream stays as it is).
    RotationSpec rotation = lp.rotation;
    rotation.keys = rotation.keys && lp.k.quantized();
    rotation.values = rotation.values && lp.v.quantized();
    if (rotation.any()) cache = std::make_unique<RotatingLayerCache>(std::move(cache), rotation);
    return cache;
  });
}

}  // namespace kvlab
