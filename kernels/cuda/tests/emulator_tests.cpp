// The host CUDA emulator itself: warp shuffles and barriers behave as on a GPU, the bugs it claims
// to catch abort with a message, and its fp16 conversions equal c10::Half's (so the emulated
// quantize-and-pack tests check what a GPU computes). Part of kvlab_cuda_emu_tests only.
#include <gtest/gtest.h>

#include <c10/util/Half.h>

#include <cstring>
#include <random>
#include <vector>

#include "device_common.cuh"

namespace {

__global__ void block_sum(const int* in, int* out) {
  __shared__ int partial[32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int v = in[blockIdx.x * blockDim.x + tid];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (tid == 0) {
    int s = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) s += partial[w];
    out[blockIdx.x] = s;
  }
}

__global__ void shuffle_down_and_broadcast(int* out) {
  const int lane = threadIdx.x & 31;
  const int down = __shfl_down_sync(0xffffffffu, lane * 10, 3);
  const int from5 = __shfl_sync(0xffffffffu, lane * 10, 5);
  out[threadIdx.x] = down * 1000 + from5;
}

// Half of warp 1 waits at the block barrier, the other half at a warp barrier: neither can pass.
__global__ void divergent_barrier() {
  if (threadIdx.x < 48) __syncthreads();
  else __syncwarp();
}

__global__ void shuffle_from_exited_lane(int* out) {
  if ((threadIdx.x & 31) == 7) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 7);
}

TEST(CudaEmulator, ShufflesAndBarriersComputeABlockSum) {
  const int blocks = 3, threads = 128;
  std::vector<int> in(blocks * threads);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i * 7 % 13);
  int *din = nullptr, *dout = nullptr;
  ASSERT_EQ(cudaMalloc(&din, in.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dout, blocks * 4), cudaSuccess);
  cudaMemcpy(din, in.data(), in.size() * 4, cudaMemcpyHostToDevice);
  KVLAB_LAUNCH(block_sum, dim3(blocks), dim3(threads), 0, nullptr)(din, dout);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<int> out(blocks);
  cudaMemcpy(out.data(), dout, blocks * 4, cudaMemcpyDeviceToHost);
  for (int b = 0; b < blocks; ++b) {
    int want = 0;
    for (int t = 0; t < threads; ++t) want += in[static_cast<size_t>(b * threads + t)];
    EXPECT_EQ(out[static_cast<size_t>(b)], want) << "block " << b;
  }
  cudaFree(din);
  cudaFree(dout);
}

TEST(CudaEmulator, ShuffleDownKeepsTheTopLanesAndShuffleBroadcasts) {
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 64 * 4), cudaSuccess);
  KVLAB_LAUNCH(shuffle_down_and_broadcast, dim3(1), dim3(64), 0, nullptr)(d);
  std::vector<int> out(64);
  cudaMemcpy(out.data(), d, 64 * 4, cudaMemcpyDeviceToHost);
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    EXPECT_EQ(out[static_cast<size_t>(t)], (lane + 3 < 32 ? lane + 3 : lane) * 10 * 1000 + 50) << t;
  }
  cudaFree(d);
}

TEST(CudaEmulator, BadLaunchConfigurationIsAnError) {
  KVLAB_LAUNCH(divergent_barrier, dim3(1), dim3(2048), 0, nullptr)();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(CudaEmulatorDeathTest, ABarrierNotEveryThreadReachesAborts) {
  EXPECT_DEATH(KVLAB_LAUNCH(divergent_barrier, dim3(1), dim3(64), 0, nullptr)(), "deadlock");
}

TEST(CudaEmulatorDeathTest, AShuffleFromALaneThatLeftAborts) {
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 32 * 4), cudaSuccess);
  EXPECT_DEATH(KVLAB_LAUNCH(shuffle_from_exited_lane, dim3(1), dim3(32), 0, nullptr)(d), "not taking part");
  cudaFree(d);
}

TEST(CudaEmulator, HalfConversionsEqualC10Half) {
  for (uint32_t h = 0; h < 65536; ++h) {  // every half -> float
    const float want = static_cast<float>(c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits()));
    const float got = kvlab_cuda::half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
      continue;
    }
    uint32_t a, b;
    std::memcpy(&a, &want, 4), std::memcpy(&b, &got, 4);
    ASSERT_EQ(a, b) << "half bits " << h;
  }
  std::mt19937 rng(1);
  std::vector<float> xs = {0.f, -0.f, 65504.f, 65519.f, 65520.f, 1e9f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 6.1e-5f,
                           6.0975e-5f, 1.f + 1.f / 2048, 1.f + 3.f / 2048, -1e-9f};
  for (int i = 0; i < 200000; ++i) {  // float -> half: random bit patterns over the whole range
    uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isfinite(f)) xs.push_back(f);
  }
  std::uniform_real_distribution<float> small(-70000.f, 70000.f);
  for (int i = 0; i < 200000; ++i) xs.push_back(small(rng) * (i % 2 ? 1.f : 1e-4f));
  for (float f : xs) ASSERT_EQ(kvlab_cuda::float_to_half(f), c10::Half(f).x) << f;
}

}  // namespace
