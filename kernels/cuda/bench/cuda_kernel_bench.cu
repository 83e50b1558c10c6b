// Bandwidth of the CUDA kernels against the device's own copy bandwidth, measured in the same run.
//   cuda_kernel_bench [--quick]
// Copy ceiling: a device-to-device cudaMemcpy (bytes read + written per second) and a read-only
// kernel (16-byte loads, bytes read per second). Decode attention: one decode step of one layer for
// KIVI-layout caches (keys per-channel, values per-token, G 32, fp16 scales/zeros, a 128-token fp16
// window) at 4K, 32K and 128K tokens, 2 and 4 bits, Llama-2-7B (32 kv-heads, 1 query each) and
// Llama-3-8B (8 kv-heads x 4 queries) head shapes; the batch is chosen so every launch reads
// >= 1 GiB (far past the 60 MB L2), the caches are filled with random codes and parameters (the
// kernel's speed does not depend on their values), and the figure is bytes the kernel must read
// (codes, scales, zeros, window, q) per second, median of the timed launches (CUDA events).
// Quantize-and-pack: appending one decode token to every stream, and a 4096-token prefill.
// Lines starting with "RESULT" are for scripts. Exit code 77: no usable CUDA device.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kvlab/cuda/kv_cuda.h"

namespace {

#define CHECK(expr)                                                                                    \
  do {                                                                                                 \
    const cudaError_t e_ = (expr);                                                                     \
    if (e_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "cuda_kernel_bench: %s: %s %s\n", #expr, cudaGetErrorString(e_), kvlab_cuda_error_detail()); \
      std::exit(1);                                                                                    \
    }                                                                                                  \
  } while (0)

__global__ void fill_random(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 0x9e3779b9u ^ seed;
    x ^= x >> 16, x *= 0x7feb352du, x ^= x >> 15, x *= 0x846ca68bu, x ^= x >> 16;
    p[i] = x;
  }
}

// fp16 values in [lo, hi) (scales, zeros, window rows).
__global__ void fill_half(uint16_t* p, size_t n, uint32_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 0x9e3779b9u ^ seed;
    x ^= x >> 16, x *= 0x7feb352du, x ^= x >> 15;
    const float u = (x >> 8) * (1.f / 16777216.f);
    p[i] = __half_as_ushort(__float2half_rn(lo + (hi - lo) * u));
  }
}

__global__ void read_all(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // keeps the loads
}

struct Timer {
  cudaEvent_t a, b;
  Timer() { cudaEventCreate(&a), cudaEventCreate(&b); }
  ~Timer() { cudaEventDestroy(a), cudaEventDestroy(b); }
};

template <typename F>
double median_ms(F&& f, int warmup, int reps) {
  Timer t;
  for (int i = 0; i < warmup; ++i) f();
  CHECK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(t.a);
    f();
    cudaEventRecord(t.b);
    CHECK(cudaEventSynchronize(t.b));
    float x = 0;
    cudaEventElapsedTime(&x, t.a, t.b);
    ms.push_back(x);
  }
  CHECK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void* dalloc(size_t bytes) {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, bytes));
  return p;
}

struct Shape {
  const char* name;
  int kv_heads, n_q, D;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("cuda_kernel_bench: no CUDA device (%s); nothing run\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB, %.1f GiB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              prop.totalGlobalMem / 1073741824.0);
  const int reps = quick ? 5 : 20;

  // ---- copy ceiling ----
  const size_t copy_bytes = size_t(2) << 30;
  void* src = dalloc(copy_bytes);
  void* dst = dalloc(copy_bytes);
  unsigned* sink = static_cast<unsigned*>(dalloc(4));
  fill_random<<<4096, 256>>>(static_cast<uint32_t*>(src), copy_bytes / 4, 1);
  const double copy_ms = median_ms([&] { cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice); }, 2, reps);
  const double copy_gbs = 2.0 * copy_bytes / copy_ms / 1e6;
  const double read_ms = median_ms([&] { read_all<<<prop.multiProcessorCount * 8, 512>>>(static_cast<const uint4*>(src), copy_bytes / 16, sink); }, 2, reps);
  const double read_gbs = copy_bytes / read_ms / 1e6;
  std::printf("copy bandwidth (read + write): %.0f GB/s; read-only kernel: %.0f GB/s\n", copy_gbs, read_gbs);
  std::printf("RESULT copy_gbs %.1f\nRESULT read_gbs %.1f\n", copy_gbs, read_gbs);
  CHECK(cudaFree(src));
  CHECK(cudaFree(dst));

  // ---- decode attention ----
  const Shape shapes[] = {{"llama2-7b", 32, 1, 128}, {"llama3-8b", 8, 4, 128}};
  const int tokens[] = {4096, 32768, 131072};
  const int window = 128, G = 32;
  std::printf("\n%-10s %7s %4s %6s %9s %9s %8s %8s %8s\n", "shape", "tokens", "bits", "batch", "MB read", "us", "GB/s",
              "%copy", "%read");
  for (const Shape& sh : shapes) {
    for (int S : tokens) {
      for (int bits : {2, 4}) {
        if (quick && S > 32768) continue;
        const int P = S - window;  // packed tokens (a multiple of G)
        const int D = sh.D;
        const int64_t k_words = int64_t(P / G) * D * ((G * bits + 31) / 32), v_words = int64_t(P) * ((D * bits + 31) / 32);
        const int64_t k_params = int64_t(P / G) * D, v_params = int64_t(P) * (D / G);
        const int64_t stream_bytes = (k_words + v_words) * 4 + (k_params + v_params) * 2 * 2 + 2LL * window * D * 2;
        const int64_t per_batch = stream_bytes * sh.kv_heads;
        int batch = static_cast<int>(std::max<int64_t>(1, ((int64_t(1) << 30) + per_batch - 1) / per_batch));
        const int64_t streams = int64_t(batch) * sh.kv_heads;
        uint32_t* kc = static_cast<uint32_t*>(dalloc(streams * k_words * 4));
        uint32_t* vc = static_cast<uint32_t*>(dalloc(streams * v_words * 4));
        uint16_t* kp = static_cast<uint16_t*>(dalloc(streams * k_params * 4));  // scales then zeros
        uint16_t* vp = static_cast<uint16_t*>(dalloc(streams * v_params * 4));
        uint16_t* kf = static_cast<uint16_t*>(dalloc(streams * window * D * 2));
        uint16_t* vf = static_cast<uint16_t*>(dalloc(streams * window * D * 2));
        float* q = static_cast<float*>(dalloc(streams * sh.n_q * D * 4));
        float* out = static_cast<float*>(dalloc(streams * sh.n_q * D * 4));
        fill_random<<<4096, 256>>>(kc, streams * k_words, 2);
        fill_random<<<4096, 256>>>(vc, streams * v_words, 3);
        fill_half<<<4096, 256>>>(kp, streams * k_params, 4, 0.01f, 0.1f);
        fill_half<<<4096, 256>>>(kp + streams * k_params, streams * k_params, 5, -1.f, 0.f);
        fill_half<<<4096, 256>>>(vp, streams * v_params, 6, 0.01f, 0.1f);
        fill_half<<<4096, 256>>>(vp + streams * v_params, streams * v_params, 7, -1.f, 0.f);
        fill_half<<<4096, 256>>>(kf, streams * window * D, 8, -1.f, 1.f);
        fill_half<<<4096, 256>>>(vf, streams * window * D, 9, -1.f, 1.f);
        fill_half<<<4096, 256>>>(reinterpret_cast<uint16_t*>(q), streams * sh.n_q * D * 2, 10, 0.f, 0.01f);
        kvlab_cuda_decode_args a{};
        a.q = q, a.q_stream_stride = sh.n_q * D, a.n_q = sh.n_q, a.dim = D, a.streams = streams;
        a.k = {KVLAB_CUDA_PER_CHANNEL, bits, G, 0, KVLAB_CUDA_F16, D, P, kc, k_words, kp, kp + streams * k_params, k_params,
               nullptr, 0, 0, 0, 0};
        a.v = {KVLAB_CUDA_PER_TOKEN, bits, G, 0, KVLAB_CUDA_F16, D, P, vc, v_words, vp, vp + streams * v_params, v_params,
               nullptr, 0, 0, 0, 0};
        a.k_full = {kf, KVLAB_CUDA_F16, window, D, int64_t(window) * D};
        a.v_full = {vf, KVLAB_CUDA_F16, window, D, int64_t(window) * D};
        a.softmax_scale = 0.088f;
        a.out = out, a.out_stream_stride = sh.n_q * D;
        a.workspace_bytes = kvlab_cuda_decode_workspace_bytes(&a);
        a.workspace = a.workspace_bytes ? dalloc(a.workspace_bytes) : nullptr;
        const double ms = median_ms([&] { CHECK(kvlab_cuda_decode_attention(&a, nullptr)); }, 3, reps);
        const double bytes = double(streams) * stream_bytes + double(streams) * sh.n_q * D * 4;
        const double gbs = bytes / ms / 1e6;
        std::printf("%-10s %7d %4d %6d %9.0f %9.1f %8.0f %7.0f%% %7.0f%%\n", sh.name, S, bits, batch, bytes / 1e6, ms * 1e3,
                    gbs, 100 * gbs / copy_gbs, 100 * gbs / read_gbs);
        std::printf("RESULT attn %s %d %d batch %d us %.2f gbs %.1f pct_copy %.1f\n", sh.name, S, bits, batch, ms * 1e3, gbs,
                    100 * gbs / copy_gbs);
        for (void* p : {static_cast<void*>(kc), static_cast<void*>(vc), static_cast<void*>(kp), static_cast<void*>(vp),
                        static_cast<void*>(kf), static_cast<void*>(vf), static_cast<void*>(q), static_cast<void*>(out), a.workspace})
          if (p) CHECK(cudaFree(p));
      }
    }
  }

  // ---- quantize-and-pack ----
  std::printf("\n%-34s %9s %9s\n", "quantize-and-pack (fp16 in)", "us", "GB/s in");
  for (int gran : {KVLAB_CUDA_PER_TOKEN, KVLAB_CUDA_PER_CHANNEL}) {
    for (int tok : {gran == KVLAB_CUDA_PER_TOKEN ? 1 : 32, 4096}) {
      const int D = 128, bits = 2, streams = tok == 4096 ? 8 * 32 : 64 * 32;
      uint16_t* x = static_cast<uint16_t*>(dalloc(size_t(streams) * tok * D * 2));
      fill_half<<<4096, 256>>>(x, size_t(streams) * tok * D, 11, -2.f, 2.f);
      const int64_t words = gran == KVLAB_CUDA_PER_TOKEN ? int64_t(tok) * D * bits / 32 : int64_t(tok) * D * bits / 32;
      const int64_t params = int64_t(tok) * D / G;
      uint32_t* c = static_cast<uint32_t*>(dalloc(streams * words * 4));
      uint16_t* p = static_cast<uint16_t*>(dalloc(streams * params * 4));
      int32_t* status = static_cast<int32_t*>(dalloc(16));
      CHECK(cudaMemset(status, 0, 16));
      kvlab_cuda_rows rows{x, KVLAB_CUDA_F16, tok, D, int64_t(tok) * D};
      kvlab_cuda_packed dstp{gran, bits, G, 0, KVLAB_CUDA_F16, D, 0, c, words, p, p + streams * params, params,
                             nullptr, 0, 0, 0, 0};
      const double ms = median_ms([&] { CHECK(kvlab_cuda_quantize_append(&rows, tok, streams, &dstp, status, nullptr)); }, 3, reps);
      const double in_bytes = double(streams) * tok * D * 2;
      char label[64];
      std::snprintf(label, sizeof label, "%s, %d tokens x %d streams", gran ? "per-channel" : "per-token", tok, streams);
      std::printf("%-34s %9.1f %9.0f\n", label, ms * 1e3, in_bytes / ms / 1e6);
      std::printf("RESULT quantize %s %d %d us %.2f\n", gran ? "channel" : "token", tok, streams, ms * 1e3);
      CHECK(cudaFree(x));
      CHECK(cudaFree(c));
      CHECK(cudaFree(p));
      CHECK(cudaFree(status));
    }
  }
  return 0;
}
