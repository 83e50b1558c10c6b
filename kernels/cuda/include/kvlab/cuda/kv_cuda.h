#pragma once
// C API of kvlab's CUDA kernels: quantize-and-pack into a layer's packed K/V storage, and fused
// decode attention over [packed ; full-precision window]. No torch types: raw device pointers,
// 16-bit values as uint16_t bits, cudaStream_t. The layouts are exactly those of the CPU kernels
// (kvlab/kernels/group_quant.h, packing.h, packed_attention.h), one stream per (batch, kv-head):
//   codes  per-token   [tokens, Wt] uint32 per stream, Wt = ceil(dim / cpw)
//          per-channel [tokens / G, dim, Wc] uint32 per stream, Wc = ceil(G / cpw)
//   scales/zeros       per-token [tokens, dim / G], per-channel [tokens / G, dim] (fp16 or fp32)
// with cpw = 32, 16, 10, 8, 4 codes per word for 1, 2, 3, 4, 8 bits. Stream i starts at
// base + i * stream_stride (in elements of the array). Quantize-and-pack gives the CPU reference's
// codes, scales and zeros bit for bit (same fp32 operations, round-half-to-even).
#include <stddef.h>
#include <stdint.h>

#if defined(KVLAB_CUDA_EMULATE)
#include "../../../emulator/cuda_emulator.h"
#else
#include <cuda_runtime_api.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum { KVLAB_CUDA_F32 = 0, KVLAB_CUDA_F16 = 1, KVLAB_CUDA_BF16 = 2 };   // element types
enum { KVLAB_CUDA_PER_TOKEN = 0, KVLAB_CUDA_PER_CHANNEL = 1 };          // group granularity

// Rows of values (full-precision K/V, or the input of quantize-and-pack), per stream:
// row t of stream i at data + (i * stream_stride + t * row_stride) elements.
typedef struct kvlab_cuda_rows {
  const void* data;
  int dtype;              // KVLAB_CUDA_F32 | F16 | BF16
  int64_t tokens;
  int64_t row_stride;
  int64_t stream_stride;
} kvlab_cuda_rows;

// The packed part of one layer's K or V, every stream.
typedef struct kvlab_cuda_packed {
  int granularity;        // KVLAB_CUDA_PER_TOKEN | PER_CHANNEL
  int bits;               // 1, 2, 3, 4, 8
  int group;              // G (resolved)
  int symmetric;          // 1: codes q + 2^(b-1) - 1, no zeros (zeros may be NULL)
  int param_dtype;        // scales / zeros: KVLAB_CUDA_F16 | F32
  int dim;                // channels in the codes (head_dim minus exact channels)
  int64_t tokens;         // tokens packed per stream (quantize-and-pack appends here)
  uint32_t* codes;
  int64_t codes_stream_stride;   // words
  void* scales;
  void* zeros;
  int64_t param_stream_stride;   // elements
  // MixKVQ's exact channels of the packed tokens: [tokens, exact_dims] per stream, read by decode
  // attention as channels dim .. dim + exact_dims - 1. exact_dims == 0: none.
  const void* exact;
  int exact_dtype;
  int exact_dims;
  int64_t exact_row_stride;
  int64_t exact_stream_stride;
} kvlab_cuda_packed;

// Device status words written by quantize-and-pack when the input is bad (zero them first):
// [0] kind (0 ok, 1 non-finite input, 2 group range overflows the parameter type),
// [1] stream, [2] token (within the appended rows), [3] channel. The first fault found wins.
enum { KVLAB_CUDA_STATUS_WORDS = 4, KVLAB_CUDA_STATUS_NONFINITE = 1, KVLAB_CUDA_STATUS_OVERFLOW = 2 };

// Quantizes x (n tokens of dst->dim channels per stream, `streams` streams) and writes the codes,
// scales and zeros at token dst->tokens of each stream (per-channel: n and dst->tokens multiples of
// G). dst->tokens is not changed; the caller advances it. status: device int32[4] or NULL.
cudaError_t kvlab_cuda_quantize_append(const kvlab_cuda_rows* x, int64_t n, int64_t streams,
                                       const kvlab_cuda_packed* dst, int32_t* status, cudaStream_t stream);

// Decode attention, one query token per stream against keys [packed K ; k_full] and values
// [packed V ; v_full] (k.tokens + k_full.tokens == v.tokens + v_full.tokens == S), fp32 softmax.
// q and out are fp32 [streams, n_q, dim] (head h of stream i at base + i * stream_stride + h * dim),
// channels in the packed layout's order (quantized ones, then exact ones). Tokens are split across
// thread blocks and merged by log-sum-exp; workspace holds the partial results.
typedef struct kvlab_cuda_decode_args {
  const float* q;
  int64_t q_stream_stride;
  int n_q;                // query heads per kv-head (GQA group)
  int dim;                // head_dim
  int64_t streams;        // batch * kv_heads
  kvlab_cuda_packed k, v;
  kvlab_cuda_rows k_full, v_full;
  float softmax_scale;
  float* out;
  int64_t out_stream_stride;
  void* workspace;
  size_t workspace_bytes;
  int splits;             // token splits per stream; 0 = chosen from the device's multiprocessors
} kvlab_cuda_decode_args;

size_t kvlab_cuda_decode_workspace_bytes(const kvlab_cuda_decode_args* a);
cudaError_t kvlab_cuda_decode_attention(const kvlab_cuda_decode_args* a, cudaStream_t stream);

// Why the last call of this thread returned cudaErrorInvalidValue (a one-line message), or "".
const char* kvlab_cuda_error_detail(void);

#ifdef __cplusplus
}
#endif
