// Quantize-and-pack on the GPU (METHODS.md section 1, layouts in kv_cuda.h): the same fp32
// operations as the CPU reference (kernels/cpu/group_quant_reference.cpp) in the same order, so
// codes, scales and zeros are bit-identical. Each group's min/max is taken by one thread in the
// reference's order (which also keeps the reference's choice between -0 and +0).
#include <cstdarg>
#include <cstdio>
#include <string>

#include "device_common.cuh"

namespace kvlab_cuda {

namespace {
thread_local std::string g_detail;
}

cudaError_t invalid(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_detail = buf;
  return cudaErrorInvalidValue;
}
void clear_detail() { g_detail.clear(); }

namespace {

struct QuantArgs {
  const void* x;
  int x_dtype;
  int64_t x_row, x_stream;
  int n, dim, bits, group, symmetric;
  bool f16;
  uint32_t* codes;
  int64_t codes_stream;
  void* scales;
  void* zeros;
  int64_t param_stream;
  int64_t first;        // first token row (per-token) or block (per-channel) to write
  int32_t* status;
  int rows;             // per-token: tokens per thread block
};

__device__ void report(int32_t* status, int kind, int64_t stream, int token, int channel) {
  if (status && atomicCAS(&status[0], 0, kind) == 0) {
    status[1] = static_cast<int32_t>(stream);
    status[2] = token;
    status[3] = channel;
  }
}

// A parameter value rounded to its stored type, as a float.
__device__ __forceinline__ float as_param(float v, bool f16) { return f16 ? half_to_float(float_to_half(v)) : v; }

__device__ __forceinline__ void store_param(void* p, bool f16, int64_t i, float v) {
  if (f16) static_cast<uint16_t*>(p)[i] = float_to_half(v);
  else static_cast<float*>(p)[i] = v;
}

// (S, Z) of a group whose min/max (or absmax) are known; false when they overflow the parameter type.
__device__ __forceinline__ bool group_params(float mn, float mx, float amax, const QuantArgs& a, float& S, float& Z) {
  if (a.symmetric) {
    const int L = (1 << (a.bits - 1)) - 1;
    S = as_param(__fdiv_rn(amax, static_cast<float>(L)), a.f16);
    Z = 0.f;
    return isfinite(S);
  }
  const int L = (1 << a.bits) - 1;
  S = as_param(__fdiv_rn(__fsub_rn(mx, mn), static_cast<float>(L)), a.f16);
  Z = as_param(mn, a.f16);
  return isfinite(S) && isfinite(Z);
}

__device__ __forceinline__ uint32_t quantize_value(float x, float S, float Z, int bits, bool symmetric) {
  if (symmetric) {
    const float L = static_cast<float>((1 << (bits - 1)) - 1);
    float v = S == 0.f ? 0.f : rintf(__fdiv_rn(x, S));
    v = fminf(fmaxf(v, -L), L);
    return static_cast<uint32_t>(static_cast<int>(v) + static_cast<int>(L));
  }
  const float L = static_cast<float>((1 << bits) - 1);
  float v = S == 0.f ? 0.f : rintf(__fdiv_rn(__fsub_rn(x, Z), S));
  v = fminf(fmaxf(v, 0.f), L);
  return static_cast<uint32_t>(v);
}

// Per-token groups. Block (stream, rows of tokens): stage the rows in shared memory as fp32, one
// thread per group for its parameters, one thread per output word for the codes.
__global__ void __launch_bounds__(128) quantize_per_token_kernel(QuantArgs a) {
  KVLAB_DYNAMIC_SMEM(float, tile);  // [rows, dim] then S, Z [rows, dim / G] each
  const int64_t stream = blockIdx.x;
  const int row0 = blockIdx.y * a.rows;
  const int rows = imin(a.rows, a.n - row0);
  const int ng = a.dim / a.group, Wt = words_for(a.dim, a.bits), cpw = codes_per_word(a.bits);
  float* S_s = tile + a.rows * a.dim;  // [rows, ng]
  float* Z_s = S_s + a.rows * ng;      // [rows, ng]
  const int nt = blockDim.x, tid = threadIdx.x;
  const int64_t xbase = stream * a.x_stream;
  for (int i = tid; i < rows * a.dim; i += nt) {
    const int r = i / a.dim, d = i % a.dim;
    const float v = load_as_float(a.x, a.x_dtype, xbase + static_cast<int64_t>(row0 + r) * a.x_row + d);
    if (!isfinite(v)) report(a.status, KVLAB_CUDA_STATUS_NONFINITE, stream, row0 + r, d);
    tile[i] = v;
  }
  __syncthreads();
  const int64_t pbase = stream * a.param_stream;
  for (int i = tid; i < rows * ng; i += nt) {
    const int r = i / ng, g = i % ng;
    const float* x = tile + r * a.dim + g * a.group;
    float mn = x[0], mx = x[0], amax = 0.f;
    for (int j = 0; j < a.group; ++j) {  // the reference's order: min/max from x[0] on, absmax from 0
      mn = x[j] < mn ? x[j] : mn;
      mx = mx < x[j] ? x[j] : mx;
      amax = fmaxf(amax, fabsf(x[j]));
    }
    float S, Z;
    if (!group_params(mn, mx, amax, a, S, Z))
      report(a.status, KVLAB_CUDA_STATUS_OVERFLOW, stream, row0 + r, g * a.group);
    S_s[i] = S, Z_s[i] = Z;
    const int64_t p = pbase + (a.first + row0 + r) * ng + g;
    store_param(a.scales, a.f16, p, S);
    if (!a.symmetric) store_param(a.zeros, a.f16, p, Z);
  }
  __syncthreads();
  const int64_t cbase = stream * a.codes_stream;
  for (int i = tid; i < rows * Wt; i += nt) {
    const int r = i / Wt, w = i % Wt;
    uint32_t word = 0;
    for (int j = 0; j < cpw; ++j) {
      const int d = w * cpw + j;
      if (d >= a.dim) break;
      const int g = r * ng + d / a.group;
      word |= quantize_value(tile[r * a.dim + d], S_s[g], Z_s[g], a.bits, a.symmetric) << (j * a.bits);
    }
    a.codes[cbase + (a.first + row0 + r) * Wt + w] = word;
  }
}

// Per-channel groups. Block (stream, token block, channel range): one thread per channel reads its
// G values (coalesced across channels), then packs them word by word.
__global__ void __launch_bounds__(128) quantize_per_channel_kernel(QuantArgs a) {
  const int64_t stream = blockIdx.x;
  const int blk = blockIdx.y;
  const int d = blockIdx.z * blockDim.x + threadIdx.x;
  if (d >= a.dim) return;
  const int G = a.group, Wc = words_for(G, a.bits), cpw = codes_per_word(a.bits);
  const int64_t xbase = stream * a.x_stream + static_cast<int64_t>(blk) * G * a.x_row + d;
  float mn = 0.f, mx = 0.f, amax = 0.f;
  for (int j = 0; j < G; ++j) {
    const float v = load_as_float(a.x, a.x_dtype, xbase + j * a.x_row);
    if (!isfinite(v)) report(a.status, KVLAB_CUDA_STATUS_NONFINITE, stream, blk * G + j, d);
    if (j == 0) mn = mx = v;
    mn = v < mn ? v : mn;
    mx = mx < v ? v : mx;
    amax = fmaxf(amax, fabsf(v));
  }
  float S, Z;
  if (!group_params(mn, mx, amax, a, S, Z)) report(a.status, KVLAB_CUDA_STATUS_OVERFLOW, stream, blk * G, d);
  const int64_t p = stream * a.param_stream + (a.first + blk) * a.dim + d;
  store_param(a.scales, a.f16, p, S);
  if (!a.symmetric) store_param(a.zeros, a.f16, p, Z);
  uint32_t* out = a.codes + stream * a.codes_stream + ((a.first + blk) * a.dim + d) * Wc;
  for (int w = 0; w < Wc; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < cpw; ++j) {
      const int t = w * cpw + j;
      if (t >= G) break;
      word |= quantize_value(load_as_float(a.x, a.x_dtype, xbase + t * a.x_row), S, Z, a.bits, a.symmetric)
              << (j * a.bits);
    }
    out[w] = word;
  }
}

}  // namespace
}  // namespace kvlab_cuda

using namespace kvlab_cuda;

extern "C" const char* kvlab_cuda_error_detail(void) { return g_detail.c_str(); }

extern "C" cudaError_t kvlab_cuda_quantize_append(const kvlab_cuda_rows* x, int64_t n, int64_t streams,
                                                  const kvlab_cuda_packed* dst, int32_t* status,
                                                  cudaStream_t stream) {
  clear_detail();
  if (!x || !dst) return invalid("quantize: null argument");
  if (!valid_bits(dst->bits)) return invalid("quantize: bit width %d is not one of 1, 2, 3, 4, 8", dst->bits);
  if (dst->symmetric && dst->bits < 2)
    return invalid("quantize: symmetric quantization needs at least 2 bits, got %d", dst->bits);
  if (x->dtype < KVLAB_CUDA_F32 || x->dtype > KVLAB_CUDA_BF16) return invalid("quantize: input dtype %d", x->dtype);
  if (dst->param_dtype != KVLAB_CUDA_F16 && dst->param_dtype != KVLAB_CUDA_F32)
    return invalid("quantize: parameter dtype %d is not fp16 or fp32", dst->param_dtype);
  if (dst->dim <= 0 || dst->group <= 0) return invalid("quantize: dim %d, group %d", dst->dim, dst->group);
  if (n < 0 || streams < 0) return invalid("quantize: %lld tokens, %lld streams", (long long)n, (long long)streams);
  if (n == 0 || streams == 0) return cudaSuccess;
  if (n > x->tokens) return invalid("quantize: %lld tokens asked, %lld given", (long long)n, (long long)x->tokens);
  if (!x->data || !dst->codes || !dst->scales || (!dst->symmetric && !dst->zeros))
    return invalid("quantize: null data, codes, scales or zeros");
  if (streams > 2147483647LL) return invalid("quantize: too many streams");
  QuantArgs a{};
  a.x = x->data, a.x_dtype = x->dtype, a.x_row = x->row_stride, a.x_stream = x->stream_stride;
  a.n = static_cast<int>(n), a.dim = dst->dim, a.bits = dst->bits, a.group = dst->group;
  a.symmetric = dst->symmetric, a.f16 = dst->param_dtype == KVLAB_CUDA_F16;
  a.codes = dst->codes, a.codes_stream = dst->codes_stream_stride;
  a.scales = dst->scales, a.zeros = dst->zeros, a.param_stream = dst->param_stream_stride;
  a.status = status;
  if (dst->granularity == KVLAB_CUDA_PER_TOKEN) {
    if (dst->dim % dst->group != 0)
      return invalid("quantize: group size %d does not divide the channels (%d)", dst->group, dst->dim);
    a.first = dst->tokens;
    a.rows = dst->dim >= 4096 ? 1 : 4096 / dst->dim;  // 16 KB of fp32 rows per block
    const int ng = dst->dim / dst->group;
    const size_t smem = sizeof(float) * (static_cast<size_t>(a.rows) * dst->dim + 2 * static_cast<size_t>(a.rows) * ng);
    const int64_t blocks = (n + a.rows - 1) / a.rows;
    if (blocks > 65535) return invalid("quantize: %lld tokens in one call is too many", (long long)n);
    KVLAB_LAUNCH(quantize_per_token_kernel, dim3(static_cast<unsigned>(streams), static_cast<unsigned>(blocks)),
                 dim3(128), smem, stream)(a);
  } else if (dst->granularity == KVLAB_CUDA_PER_CHANNEL) {
    if (n % dst->group != 0 || dst->tokens % dst->group != 0)
      return invalid("quantize: group size %d does not divide the tokens (%lld appended at %lld)", dst->group,
                     (long long)n, (long long)dst->tokens);
    a.first = dst->tokens / dst->group;
    const int64_t blocks = n / dst->group;
    if (blocks > 65535) return invalid("quantize: %lld tokens in one call is too many", (long long)n);
    KVLAB_LAUNCH(quantize_per_channel_kernel,
                 dim3(static_cast<unsigned>(streams), static_cast<unsigned>(blocks), (dst->dim + 127) / 128),
                 dim3(128), 0, stream)(a);
  } else {
    return invalid("quantize: granularity %d", dst->granularity);
  }
  return cudaGetLastError();
}
