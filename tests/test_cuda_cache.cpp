// The quantized cache on a CUDA device against the same cache on the CPU: the CUDA kernels pack
// bit-identically (so the dequantized caches agree to rounding) and decode attention agrees within
// fp32 error. The CUDA tests skip with a message where no GPU is usable. The tensor-operation
// dequantization the GPU path uses is checked on the CPU against the kernels here too.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include "kvlab/cache/cuda_backend.h"
#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/model/attention.h"
#include "kvlab/quant/kv_method.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return at::randn(shape, g);
}

LayerPlan kivi_layer(int bits, int64_t G, int64_t R) {
  YAML::Node p;
  p["bits"] = bits, p["group"] = G, p["residual"] = R;
  return MethodRegistry::instance().create("kivi", p)->plan(test::small_config()).layers[0];
}

TEST(QuantizedStreamTensorOps, DequantizeEqualsTheKernels) {
  const int64_t B = 2, H = 3, T = 48, D = 32;
  int seed = 1;
  for (Granularity g : {Granularity::PerToken, Granularity::PerChannel})
    for (int bits : {1, 2, 3, 4, 8})
      for (bool sym : {false, true})
        for (ParamType p : {ParamType::F16, ParamType::F32}) {
          if (sym && bits < 2) continue;
          TensorQuantSpec spec;
          spec.bits = bits, spec.group = 16, spec.granularity = g, spec.symmetric = sym, spec.param = p;
          QuantizedStream s(spec, FlushRule{});
          s.append(randn({B, H, T, D}, static_cast<uint64_t>(seed++)).to(at::kHalf));
          s.flush();
          ASSERT_EQ(s.packed_tokens(), T);
          const at::Tensor by_kernels = s.dequantized(), by_ops = s.dequantized_by_tensor_ops();
          ASSERT_EQ(by_ops.sizes(), by_kernels.sizes());
          EXPECT_TRUE(at::allclose(by_ops, by_kernels, 1e-6, 1e-6))
              << spec.describe() << (sym ? " sym" : "") << ": max diff "
              << (by_ops - by_kernels).abs().max().item<float>();
        }
}

bool have_cuda() { return at::hasCUDA() && cuda_backend::compiled(); }
#define SKIP_WITHOUT_CUDA()                                                                               \
  if (!have_cuda()) GTEST_SKIP() << (at::hasCUDA() ? "kvlab built without KVLAB_CUDA" : "no CUDA device")

// Runs the same prefill + decode steps through a CPU and a CUDA cache and compares every output.
void compare_devices(const LayerPlan& plan, MultiTokenMode mode, at::ScalarType dtype, int64_t Hq, int64_t Hkv,
                     int64_t D, int64_t prefill, int steps, const std::string& what) {
  const int64_t B = 2;
  const at::Device cuda(at::kCUDA);
  QuantizedLayerCache cpu(plan, mode), gpu(plan, mode);
  auto feed = [&](int64_t T, uint64_t seed) {
    const at::Tensor q = randn({B, Hq, T, D}, seed).to(dtype), k = randn({B, Hkv, T, D}, seed + 1).to(dtype),
                     v = randn({B, Hkv, T, D}, seed + 2).to(dtype);
    const at::Tensor want = cpu.attend(q, k, v).to(at::kFloat);
    const at::Tensor got = gpu.attend(q.to(cuda), k.to(cuda), v.to(cuda)).cpu().to(at::kFloat);
    const float err = ((got - want).abs() / (want.abs() + 1)).max().item<float>();
    EXPECT_LT(err, dtype == at::kFloat ? 1e-4f : 1e-2f) << what << ", " << T << " new tokens at " << gpu.length();
  };
  feed(prefill, 100);
  for (int s = 0; s < steps; ++s) feed(1, 200 + 3 * static_cast<uint64_t>(s));
  // Bit-identical packing: the dequantized caches agree to rounding.
  for (int kv = 0; kv < 2; ++kv) {
    const QuantizedStream& a = kv ? cpu.values() : cpu.keys();
    const QuantizedStream& b = kv ? gpu.values() : gpu.keys();
    ASSERT_EQ(a.packed_tokens(), b.packed_tokens()) << what;
    if (a.packed_tokens() == 0) continue;
    const at::Tensor da = a.dequantized(), db = b.dequantized().cpu();
    EXPECT_TRUE(at::allclose(da, db, 1e-6, 1e-6)) << what << (kv ? " values" : " keys") << ": max diff "
                                                  << (da - db).abs().max().item<float>();
  }
}

TEST(CudaCache, KiviDecodeMatchesTheCpuCache) {
  SKIP_WITHOUT_CUDA();
  for (int bits : {2, 4}) compare_devices(kivi_layer(bits, 32, 128), MultiTokenMode::FullPrecision, at::kFloat, 8, 2,
                                          128, 700, 40, "kivi " + std::to_string(bits));
  compare_devices(kivi_layer(2, 32, 128), MultiTokenMode::FullPrecision, at::kHalf, 32, 32, 128, 300, 5, "kivi-2 fp16");
  compare_devices(kivi_layer(3, 8, 16), MultiTokenMode::FullPrecision, at::kBFloat16, 4, 4, 8, 100, 20, "kivi-3 bf16");
}

TEST(CudaCache, OtherLayoutsAndExactChannelsMatchTheCpuCache) {
  SKIP_WITHOUT_CUDA();
  {
    YAML::Node p;
    p["bits"] = 3, p["group"] = 8, p["window"] = 5;
    compare_devices(MethodRegistry::instance().create("uniform", p)->plan(test::small_config()).layers[0],
                    MultiTokenMode::FullPrecision, at::kFloat, 4, 2, 64, 300, 10, "uniform 3-bit per-token");
  }
  LayerPlan lp = kivi_layer(2, 32, 32);
  lp.k.head_exact_channels = {{1, 5, 9, 100}, {2, 12, 40, 127}};
  compare_devices(lp, MultiTokenMode::FullPrecision, at::kFloat, 8, 2, 128, 600, 10, "mixkvq-like exact key channels");
}

TEST(CudaCache, TokenByTokenModeMatchesTheCpuCache) {
  SKIP_WITHOUT_CUDA();
  compare_devices(kivi_layer(2, 32, 64), MultiTokenMode::TokenByToken, at::kFloat, 4, 2, 64, 200, 0, "token by token");
}

TEST(CudaCache, NonFiniteKeysAreAnErrorAndNothingIsStored) {
  SKIP_WITHOUT_CUDA();
  const at::Device cuda(at::kCUDA);
  QuantizedLayerCache cache(kivi_layer(2, 32, 0), MultiTokenMode::Quantized);
  at::Tensor k = randn({1, 2, 64, 32}, 1);
  k[0][1][40][3] = std::numeric_limits<float>::quiet_NaN();
  try {
    cache.attend(randn({1, 4, 64, 32}, 2).to(cuda), k.to(cuda), randn({1, 2, 64, 32}, 3).to(cuda));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite value in K/V at batch 0, head 1, token 40, channel 3"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(cache.keys().packed_tokens(), 0);
}

}  // namespace
}  // namespace kvlab
