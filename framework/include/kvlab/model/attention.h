#pragma once
// Plain scaled-dot-product attention with GQA and a causal mask over a block of new queries.
// Used by the full-precision cache and as the reference every faster attention is tested against.
#include <ATen/core/Tensor.h>

namespace kvlab {

// q: [B, Hq, T, D]; keys, values: [B, Hkv, S, D] with S >= T, the last T of which are the new tokens
// whose queries these are (query t sits at position S - T + t). Returns [B, Hq, T, D] in q's dtype.
// Scores and softmax are computed in fp32 (as HF's eager attention does for softmax); K/V are never
// expanded to Hq heads: queries are grouped per kv-head instead. Long blocks of queries are processed
// in slices whose scores take at most 64 MiB, so a long batched prefill never holds B * Hq * T * S
// scores at once.
at::Tensor causal_gqa_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values);

}  // namespace kvlab
