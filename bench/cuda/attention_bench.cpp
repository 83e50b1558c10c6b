// kvlab_cuda_attention_bench: one decode step of one layer on the GPU, the quantized cache's path
// (QuantizedStream storage + cuda_backend::decode_attention, i.e. the CUDA kernels as the runtime
// calls them) against the fp16 baseline through LibTorch's fused scaled-dot-product attention, at
// 4K / 32K / 128K tokens for Llama-2-7B (32 kv-heads x 1 query) and Llama-3-8B (8 x 4) heads.
// KIVI caches: keys per-channel G 32 (128-token block rule), values per-token G 32 (128 recent),
// fp16 scales/zeros, filled by really quantizing random fp16 K/V with the CUDA kernel.
// The batch is the same for every method of a row, chosen so the 2-bit cache is >= 1 GiB (far past
// the L2). Times are the mean of timed steps after warm-up (device synchronised around them);
// GB/s counts the bytes each method must read. Also: quantize-and-pack of one decode token.
//   kvlab_cuda_attention_bench [--quick]      exit 77 when no CUDA device is usable
#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "kvlab/cache/cuda_backend.h"
#include "kvlab/cache/quantized_stream.h"

using namespace kvlab;

namespace {

double mean_us(const std::function<void()>& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  c10::cuda::device_synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  c10::cuda::device_synchronize();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
}

struct Shape {
  const char* name;
  int64_t kv_heads, n_q, D;
};

FlushRule rule(FlushRule::Kind k, int64_t window) {
  FlushRule r;
  r.kind = k, r.window = window;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  if (!at::hasCUDA() || !cuda_backend::compiled()) {
    std::printf("kvlab_cuda_attention_bench: no CUDA device%s; nothing run\n",
                cuda_backend::compiled() ? "" : " (kvlab built without KVLAB_CUDA)");
    return 77;
  }
  const at::Device cuda(at::kCUDA);
  const auto f16 = at::TensorOptions().dtype(at::kHalf).device(cuda);
  const int reps = quick ? 5 : 20;
  const Shape shapes[] = {{"llama2-7b", 32, 1, 128}, {"llama3-8b", 8, 4, 128}};
  std::printf("%-10s %7s %5s %-12s %10s %9s %9s\n", "shape", "tokens", "batch", "method", "us/step", "GB/s", "vs fp16");
  for (const Shape& sh : shapes) {
    for (int64_t S : {4096L, 32768L, 131072L}) {
      if (quick && S > 32768) continue;
      const int64_t D = sh.D, H = sh.kv_heads, G = 32, R = 128;
      const double bytes_2bit_stream = S * D * (2 * 2 / 8.0 + 2 * 2 * 2.0 / G);
      const int64_t batch = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(1073741824.0 / (bytes_2bit_stream * H))));
      const at::Tensor q = at::randn({batch, H * sh.n_q, 1, D}, f16);
      // fp16 baseline.
      double fp16_us = 0;
      {
        const at::Tensor k = at::randn({batch, H, S, D}, f16), v = at::randn({batch, H, S, D}, f16);
        std::function<void()> step;
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
        step = [&] { (void)at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, std::nullopt, sh.n_q > 1); };
#else
        step = [&] {  // no fused kernel in this LibTorch: matmul + softmax
          const at::Tensor qg = q.view({batch, H, sh.n_q, D}).to(at::kFloat);
          (void)at::matmul(at::softmax(at::matmul(qg, k.transpose(-1, -2).to(at::kFloat)), -1), v.to(at::kFloat));
        };
#endif
        fp16_us = mean_us(step, 3, reps);
        const double bytes = 2.0 * batch * H * S * D * 2;
        std::printf("%-10s %7lld %5lld %-12s %10.1f %9.0f %9s\n", sh.name, (long long)S, (long long)batch, "fp16-sdpa",
                    fp16_us, bytes / fp16_us / 1e3, "1.00x");
        std::printf("RESULT sdpa %s %lld batch %lld us %.2f gbs %.1f\n", sh.name, (long long)S, (long long)batch, fp16_us,
                    bytes / fp16_us / 1e3);
      }
      for (int bits : {2, 4}) {
        TensorQuantSpec ks, vs;
        ks.bits = vs.bits = bits;
        ks.group = vs.group = G;
        ks.granularity = Granularity::PerChannel;
        vs.granularity = Granularity::PerToken;
        QuantizedStream kst(ks, rule(FlushRule::Kind::Block, R)), vst(vs, rule(FlushRule::Kind::Recent, R));
        for (int64_t t = 0; t < S; t += 4096) {  // fill in slices, so the fp16 buffers stay small
          const int64_t n = std::min<int64_t>(4096, S - t);
          kst.append(at::randn({batch, H, n, D}, f16));
          vst.append(at::randn({batch, H, n, D}, f16));
          kst.flush();
          vst.flush();
        }
        const at::Tensor qf = q.view({batch, H, sh.n_q, D}).to(at::kFloat);
        const at::Tensor none;
        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        const double us = mean_us([&] {
          (void)cuda_backend::decode_attention(qf, kst.layout(), kst.full(), none, vst.layout(), vst.full(), none, scale);
        }, 3, reps);
        const ByteBreakdown kb = kst.bytes(), vb = vst.bytes();
        const double bytes = static_cast<double>(kb.total() + vb.total());
        char label[32];
        std::snprintf(label, sizeof label, "kivi-%d", bits);
        std::printf("%-10s %7lld %5lld %-12s %10.1f %9.0f %8.2fx\n", sh.name, (long long)S, (long long)batch, label, us,
                    bytes / us / 1e3, fp16_us / us);
        std::printf("RESULT packed %s %lld %d batch %lld us %.2f gbs %.1f speedup %.3f\n", sh.name, (long long)S, bits,
                    (long long)batch, us, bytes / us / 1e3, fp16_us / us);
        if (S == 4096) {  // one decode token appended to every stream and flushed (values: per step)
          const double qus = mean_us([&] {
            vst.append(at::randn({batch, H, 1, D}, f16));
            vst.flush();
          }, 3, reps);
          std::printf("%-10s %7s %5lld %-12s %10.1f   (append + quantize one token, %lld streams)\n", sh.name, "", (long long)batch,
                      label, qus, (long long)(batch * H));
        }
      }
    }
  }
  return 0;
}
