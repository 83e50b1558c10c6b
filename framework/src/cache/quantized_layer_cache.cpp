#include "kvlab/cache/quantized_layer_cache.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

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

// [history packed (dequantized) ; history full precision] in `dtype`, for multi-token attention.
static at::Tensor stored(const QuantizedStream& s, at::ScalarType dtype) {
  at::Tensor full = s.full();
  if (s.packed_tokens() == 0) return full;
  at::Tensor deq = s.dequantized().to(full.device(), dtype);
  return full.size(2) == 0 ? deq : at::cat({deq, full}, 2);
}

at::Tensor QuantizedLayerCache::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t T = q.size(2);
  if (T == 1 || mode_ == MultiTokenMode::Quantized) {
    keys_.append(k);
    values_.append(v);
    keys_.flush();
    values_.flush();
    if (T == 1) return decode_attention(q);
    return causal_gqa_attention(q, stored(keys_, k.scalar_type()), stored(values_, v.scalar_type()));
  }
  if (mode_ == MultiTokenMode::TokenByToken) return token_by_token_attention(q, k, v);
  // FullPrecision: this chunk's own tokens are read exactly, the history as stored.
  at::Tensor out;
  if (keys_.tokens() == 0) {
    out = causal_gqa_attention(q, k, v);
  } else {
    out = causal_gqa_attention(q, at::cat({stored(keys_, k.scalar_type()), k}, 2),
                               at::cat({stored(values_, v.scalar_type()), v}, 2));
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
  at::Tensor kf = keys_.full().to(at::kFloat);    // [B, Hkv, tk, D]
  at::Tensor vf = values_.full().to(at::kFloat);  // [B, Hkv, tv, D]
  at::Tensor v_order, k_rows, v_rows;
  if (k_exact) {
    const at::Tensor k_order = keys_.channel_order();
    qf = reorder(qf, k_order), kf = reorder(kf, k_order);
    k_rows = keys_.exact_rows();
  }
  if (v_exact) {
    v_order = values_.channel_order();
    vf = reorder(vf, v_order);
    v_rows = values_.exact_rows();
  }
  qf = qf.contiguous(), kf = kf.contiguous(), vf = vf.contiguous();
  const int64_t tk = kf.size(2), tv = vf.size(2);
  const int64_t ek = keys_.spec().exact_count(), ev = values_.spec().exact_count();
  const int64_t pk = keys_.packed_tokens(), pv = values_.packed_tokens();
  at::Tensor out = at::empty({B, Hkv, G, D}, at::kFloat);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float* qp = qf.data_ptr<float>();
  const float* kp = kf.data_ptr<float>();
  const float* vp = vf.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> workspace(static_cast<size_t>(G * S));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / Hkv, h = bh % Hkv;
      kernels::PackedStream ks = keys_.packed_view(b, h), vs = values_.packed_view(b, h);
      if (k_exact) ks.exact_dims = ek, ks.exact = pk > 0 ? k_rows.data_ptr<float>() + bh * pk * ek : nullptr;
      if (v_exact) vs.exact_dims = ev, vs.exact = pv > 0 ? v_rows.data_ptr<float>() + bh * pv * ev : nullptr;
      kernels::packed_decode_attention(qp + bh * G * D, G, D, ks, kp + bh * tk * D, tk, vs, vp + bh * tv * D, tv,
                                       scale, op + bh * G * D, workspace.data());
    }
  });
  if (v_exact) out = at::empty_like(out).scatter_(3, v_order.view({1, Hkv, 1, D}).expand_as(out), out);
  return out.view({B, Hq, 1, D}).to(q.scalar_type());
}

// Token-by-token semantics in one pass. Let P_s(t) be the number of packed tokens of stream s after
// the t-th new token's step (QuantizedStream::schedule). Query t sees key j packed iff
// j < P_k(t), else exact; the same for values. Packing is deterministic per token (per-token groups)
// or per aligned block of G tokens (per-channel groups), so each token's packed value is the same
// whenever it is packed: quantize once, then mask.
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
  at::Tensor k_exact = after(keys_.full(), k);  // tokens [keys_.packed .. S)
  at::Tensor v_exact = after(values_.full(), v);
  const int64_t k_packed0 = keys_.packed_tokens(), v_packed0 = values_.packed_tokens();
  keys_.append(k);
  values_.append(v);
  keys_.quantize_oldest(pk.back() - k_packed0);
  values_.quantize_oldest(pv.back() - v_packed0);
  // Packed versions of tokens [0, P(T-1)), fp32.
  at::Tensor k_q = keys_.dequantized(), v_q = values_.dequantized();

  const auto f32 = at::kFloat;
  at::Tensor qg = q.to(f32).reshape({B, Hkv, G * T, D});
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  // Scores against the exact keys (tokens k_packed0..S) and the packed ones (0..P_k(T-1)).
  at::Tensor s_exact = at::matmul(qg, k_exact.to(f32).transpose(-1, -2)).mul_(scale);  // [B,Hkv,G*T,S-k_packed0]
  at::Tensor s_packed = at::matmul(qg, k_q.transpose(-1, -2)).mul_(scale);             // [B,Hkv,G*T,P_k]
  // Assemble scores over all S tokens: packed where j < P_k(t), exact otherwise, -inf beyond t.
  const auto lopt = at::TensorOptions().dtype(at::kLong);
  at::Tensor t_idx = at::arange(T, lopt).repeat({G});                           // row -> t
  at::Tensor j = at::arange(S, lopt).unsqueeze(0);                              // [1, S]
  at::Tensor pk_t = at::tensor(pk, lopt).index_select(0, t_idx).unsqueeze(1);   // [G*T, 1]
  at::Tensor pv_t = at::tensor(pv, lopt).index_select(0, t_idx).unsqueeze(1);
  at::Tensor causal = j <= (t_idx.unsqueeze(1) + past);                         // [G*T, S]
  at::Tensor use_packed_k = j < pk_t;
  at::Tensor use_packed_v = j < pv_t;

  at::Tensor scores = at::full({B, Hkv, G * T, S}, -std::numeric_limits<float>::infinity(), qg.options());
  const int64_t n_exact = S - k_packed0, n_pk = k_q.size(2);
  scores.narrow(3, k_packed0, n_exact).copy_(s_exact);
  if (n_pk > 0) {
    at::Tensor region = scores.narrow(3, 0, n_pk);
    region.copy_(at::where(use_packed_k.narrow(1, 0, n_pk), s_packed, region));
  }
  scores = scores.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1);  // [B, Hkv, G*T, S]

  // Values: packed where j < P_v(t), exact otherwise.
  const int64_t v_exact0 = v_packed0, n_pv = v_q.size(2);
  at::Tensor p_exact = probs.narrow(3, v_exact0, S - v_exact0);
  if (n_pv > v_exact0) {
    // Tokens packed during this chunk: their exact share is where they are not yet packed.
    at::Tensor mask = use_packed_v.narrow(1, v_exact0, S - v_exact0).logical_not();
    p_exact = p_exact * mask.to(f32);
  }
  at::Tensor out = at::matmul(p_exact, v_exact.to(f32));
  if (n_pv > 0) {
    at::Tensor p_packed = probs.narrow(3, 0, n_pv) * use_packed_v.narrow(1, 0, n_pv).to(f32);
    out = out + at::matmul(p_packed, v_q);
  }
  return out.reshape({B, Hq, T, D}).to(q.scalar_type());
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
