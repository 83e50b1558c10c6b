#pragma once
// One of K or V of one layer under a TensorQuantSpec and a FlushRule: the oldest tokens packed
// (low-bit codes + fp16/fp32 scales and zeros, layouts of kernels/group_quant.h), the newest in a
// full-precision buffer in the model's dtype. Tokens only ever move from the full-precision part to
// the packed part, oldest first, in whole flush units.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kvlab/cache/cuda_backend.h"
#include "kvlab/cache/kv_cache.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/quant/cache_plan.h"

namespace kvlab {

class QuantizedStream {
 public:
  QuantizedStream(TensorQuantSpec spec, FlushRule rule);

  // x: [B, H, T, D] (any float dtype; the first append fixes B, H, D and the dtype).
  void append(const at::Tensor& x);
  // Applies the flush rule to the current full-precision part; returns tokens moved.
  int64_t flush();
  // Moves exactly n of the oldest full-precision tokens into the packed part (n a multiple of the
  // group for per-channel streams).
  void quantize_oldest(int64_t n);

  int64_t packed_tokens() const { return packed_; }
  int64_t full_tokens() const { return full_len_; }
  int64_t tokens() const { return packed_ + full_len_; }
  int64_t unit() const;  // flush unit of this stream (group for per-channel, 1 per-token)
  const TensorQuantSpec& spec() const { return spec_; }
  const FlushRule& rule() const { return rule_; }

  at::Tensor full() const;          // [B, H, full_tokens, D] view, model dtype
  at::Tensor dequantized() const;   // [B, H, packed_tokens, D] fp32 (a copy)
  // The quantized channels [B, H, packed_tokens, D - exact] by tensor operations on the stream's
  // device (what dequantized() uses off the CPU; the CPU path runs the kernels).
  at::Tensor dequantized_by_tensor_ops() const;
  kernels::PackedStream packed_view(int64_t b, int64_t h) const;  // for the attention kernel
  cuda_backend::PackedLayout layout() const;  // every (batch, head) at once, for the CUDA kernels
  bool has_exact_channels() const { return spec_.exact_count() > 0; }
  // With exact channels, for the attention kernel: each head's channels in the order the packed
  // layout uses, quantized ones first, then the exact ones ([H, D] int64); and the exact channels
  // of the packed tokens as fp32 [B, H, packed_tokens, n_exact] (a copy).
  at::Tensor channel_order() const;
  at::Tensor exact_rows() const;
  ByteBreakdown bytes() const;
  int64_t capacity_bytes() const;
  void reset();

  // Simulates the flush rule for `steps` single-token appends starting from (packed, full) counts;
  // returns the packed count after each step (what token-by-token decoding would hold).
  std::vector<int64_t> schedule(int64_t steps) const;

 private:
  void reserve_packed(int64_t tokens);
  void reserve_full(int64_t tokens);
  TensorQuantSpec spec_;
  FlushRule rule_;
  int64_t B_ = 0, H_ = 0, D_ = 0, G_ = 0;
  int64_t Dq_ = 0;                     // quantized channels (D_ minus the exact ones)
  // Channel ids (int64) per head when the spec has exact channels: exact_idx_ [H, n_exact],
  // quant_idx_ [H, Dq] (rows equal when one list serves every head).
  at::Tensor exact_idx_, quant_idx_;
  at::Tensor kept_;                    // [B, H, cap, n_exact] exact channels of packed tokens
  int64_t packed_ = 0;                 // tokens in the packed part
  // Packed storage (capacity grows by doubling):
  //   per-token:   codes [B, H, cap, Wt] int32, scales/zeros [B, H, cap, D/G]
  //   per-channel: codes [B, H, cap/G, D, Wc] int32, scales/zeros [B, H, cap/G, D]
  at::Tensor codes_, scales_, zeros_;
  int64_t packed_cap_ = 0;             // tokens
  at::Tensor full_buf_;                // [B, H, cap, D] model dtype; live tokens [begin, begin+len)
  int64_t full_begin_ = 0, full_len_ = 0;
};

}  // namespace kvlab
