#pragma once
// The GPU side of the quantized cache: QuantizedStream and QuantizedLayerCache call these when their
// tensors live on a CUDA device (the model run with --device cuda). They wrap the CUDA kernels'
// C API (kernels/cuda/include/kvlab/cuda/kv_cuda.h) on the current LibTorch stream. Compiled in
// when kvlab is built with KVLAB_CUDA (a LibTorch with CUDA); otherwise each call fails with an
// error that says so.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packed_attention.h"

namespace kvlab::cuda_backend {

bool compiled();  // this kvlab has the CUDA kernels

// The packed part of one K or V stream of a layer, every (batch, kv-head) at once: stream i's data
// starts at base + i * stream_stride elements (layouts of kernels/group_quant.h).
struct PackedLayout {
  kernels::Granularity granularity = kernels::Granularity::PerToken;
  int bits = 2;
  int64_t group = 32;
  bool symmetric = false;
  kernels::ParamType param = kernels::ParamType::F16;
  int64_t dim = 0;        // channels in the codes
  int64_t tokens = 0;     // packed tokens
  void* codes = nullptr;
  int64_t codes_stream_stride = 0;  // 32-bit words
  void* scales = nullptr;
  void* zeros = nullptr;            // nullptr when symmetric
  int64_t param_stream_stride = 0;  // elements
};

// Quantizes x [B, H, n, dim] (float, half or bfloat16 on the device; the last dim contiguous) into
// dst's storage at token dst.tokens (the caller advances it). A non-finite input or a group range
// the parameter type cannot hold is a kvlab::Error naming batch, head, token and channel; nothing
// counted as stored changes.
void quantize_append(const at::Tensor& x, const PackedLayout& dst);

// Decode attention for one new query per sequence: q [B, Hkv, n_q, D] fp32 (channels in the packed
// order), keys [packed k ; k_full [B, Hkv, tk, D]], values [packed v ; v_full]; k_exact / v_exact
// [B, Hkv, packed, e] hold exact channels of packed tokens (undefined when none). Returns
// [B, Hkv, n_q, D] fp32.
at::Tensor decode_attention(const at::Tensor& q, const PackedLayout& k, const at::Tensor& k_full,
                            const at::Tensor& k_exact, const PackedLayout& v, const at::Tensor& v_full,
                            const at::Tensor& v_exact, float softmax_scale);

}  // namespace kvlab::cuda_backend
