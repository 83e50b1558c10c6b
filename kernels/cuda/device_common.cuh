#pragma once
// Helpers shared by the kernels: element loads by dtype, fp16 conversions that round exactly as the
// CPU's c10::Half does (to nearest, ties to even), the launch macro, the error detail message.
#include <stdint.h>

#include "kvlab/cuda/kv_cuda.h"

#if !defined(KVLAB_CUDA_EMULATE)
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define KVLAB_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif

// The block's dynamic shared memory as T*.
#if defined(KVLAB_CUDA_EMULATE)
#define KVLAB_DYNAMIC_SMEM(T, name) T* name = static_cast<T*>(kvlab_emu::dynamic_smem())
#else
#define KVLAB_DYNAMIC_SMEM(T, name) \
  extern __shared__ float4 kvlab_smem_[];  \
  T* name = reinterpret_cast<T*>(kvlab_smem_)
#endif

namespace kvlab_cuda {

__host__ __device__ constexpr int codes_per_word(int bits) { return bits == 3 ? 10 : 32 / bits; }
__host__ __device__ inline int words_for(int n, int bits) {
  return (n + codes_per_word(bits) - 1) / codes_per_word(bits);
}
__host__ __device__ inline bool valid_bits(int b) { return b == 1 || b == 2 || b == 3 || b == 4 || b == 8; }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

__device__ __forceinline__ float half_to_float(uint16_t h) {
#if defined(KVLAB_CUDA_EMULATE)
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in fp32
    const float v = static_cast<float>(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
#else
  return __half2float(__ushort_as_half(h));
#endif
}

__device__ __forceinline__ uint16_t float_to_half(float f) {
#if defined(KVLAB_CUDA_EMULATE)
  const uint32_t x = __float_as_uint(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (ax >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65536 (and Inf): Inf
  if (ax < 0x38800000u) {  // below 2^-14: a half subnormal, round(|f| / 2^-24) to even
    const float scaled = __uint_as_float(ax) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(rintf(scaled)));
  }
  uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
  const uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return static_cast<uint16_t>(sign | h);
#else
  return __half_as_ushort(__float2half_rn(f));
#endif
}

__device__ __forceinline__ float bf16_to_float(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

// Element i of an array of `dtype` values.
__device__ __forceinline__ float load_as_float(const void* p, int dtype, int64_t i) {
  if (dtype == KVLAB_CUDA_F32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dtype == KVLAB_CUDA_F16 ? half_to_float(h) : bf16_to_float(h);
}

// Parameters (scales, zeros) are fp16 or fp32.
__device__ __forceinline__ float load_param(const void* p, bool f16, int64_t i) {
  return f16 ? half_to_float(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

// Sets the thread's error detail and returns cudaErrorInvalidValue.
cudaError_t invalid(const char* fmt, ...);
void clear_detail();

}  // namespace kvlab_cuda
