#pragma once
// A host emulator of the small part of CUDA the kernels in kernels/cuda use, so that the very same
// kernel source runs on a machine without a GPU (the tests in ctest, CI) and is checked against the
// CPU reference there. Every CUDA thread of a block is a fiber on one OS thread; blocks run one
// after another. __syncthreads waits for every live thread of the block, warp shuffles for every
// live lane of the warp; a barrier nobody can pass, or a shuffle from a lane that did not take part,
// aborts with a message (these are bugs on a GPU too). Dynamic shared memory is filled with 0xff
// bytes (NaN as floats) before each block, so reading what no thread wrote shows up.
// What it cannot show: races the hardware would expose (fibers switch only at barriers), memory
// coalescing, timing. compute-sanitizer on a device covers the first.
#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

// ---- the runtime API subset -----------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct CUstream_st;
typedef CUstream_st* cudaStream_t;

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

cudaError_t cudaMalloc(void** p, size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
template <typename F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

using std::isfinite;

// ---- execution -------------------------------------------------------------------------------
namespace kvlab_emu {
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void sync_block();
void sync_warp();
void* dynamic_smem();
// Exchanges 8 bytes with another lane: every live lane of the warp must call it (as on a GPU with a
// full mask); returns what lane `src` put in.
uint64_t exchange(uint64_t mine, int src);
void set_launch_error(cudaError_t e);
void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);

template <typename T>
T shfl(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = exchange(bits, src & 31);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  run_grid(grid, block, smem, [&] { kernel(args...); });
}
}  // namespace kvlab_emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define threadIdx (::kvlab_emu::thread_idx())
#define blockIdx (::kvlab_emu::block_idx())
#define blockDim (::kvlab_emu::block_dim())
#define gridDim (::kvlab_emu::grid_dim())

inline void __syncthreads() { kvlab_emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { kvlab_emu::sync_warp(); }
inline int kvlab_emu_lane() { return static_cast<int>(threadIdx.x % 32); }
template <typename T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  const int lane = kvlab_emu_lane();
  return kvlab_emu::shfl(v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  const int lane = kvlab_emu_lane();
  const int src = lane ^ mask;
  return kvlab_emu::shfl(v, src < ((lane & ~(width - 1)) + width) ? src : lane);
}
template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = kvlab_emu_lane();
  const int src = (lane % width) + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return kvlab_emu::shfl(v, src);
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
// Fibers switch only at barriers, so a read-modify-write is never interleaved.
inline int atomicCAS(int* p, int compare, int value) { const int old = *p; if (old == compare) *p = value; return old; }
inline int atomicExch(int* p, int value) { const int old = *p; *p = value; return old; }
inline unsigned __ldg(const unsigned* p) { return *p; }

// Kernel launch: KVLAB_LAUNCH(kernel, grid, block, smem, stream)(args...).
#define KVLAB_LAUNCH(kernel, grid, block, smem, stream) ::kvlab_emu_launcher(kernel, grid, block, smem)
template <typename K>
struct KvlabEmuLauncher {
  K kernel;
  dim3 grid, block;
  size_t smem;
  template <typename... A>
  void operator()(A&&... args) const { kvlab_emu::launch(kernel, grid, block, smem, std::forward<A>(args)...); }
};
template <typename K>
KvlabEmuLauncher<K> kvlab_emu_launcher(K kernel, dim3 grid, dim3 block, size_t smem) { return {kernel, grid, block, smem}; }
