// CPU throughput of the runtime: the machine's matmul GFLOP/s (the ceiling), prefill tokens/s and
// achieved GFLOP/s (of_matmul: the fraction of the best matmul GFLOP/s measured in the same run;
// target >= 0.5 for the 135M shape in fp32), and decode tokens/s, for the tiny shape, a
// ~100M-parameter shape and SmolLM2-135M's shape, in fp32 and bf16 (16-bit weights, fp32 compute).
//   ./build/kvlab_bench --benchmark_filter='Matmul|Prefill|Decode/'
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <map>

#include "kvlab/model/dtype.h"
#include "kvlab/kernels/linear16.h"
#include "kvlab/model/linear.h"
#include "kvlab/model/llama_model.h"

namespace {

using kvlab::KvCache;
using kvlab::LlamaModel;
using kvlab::ModelConfig;

const char* shape_of(int64_t i) { return i == 0 ? "tiny" : i == 1 ? "small-100m" : "smollm2-135m"; }

// dtype 0 = float32, 1 = bfloat16.
LlamaModel& model_for(int64_t shape, int64_t dtype = 0) {
  static std::map<std::pair<int64_t, int64_t>, std::unique_ptr<LlamaModel>> cache;
  auto& m = cache[{shape, dtype}];
  kvlab::LoadOptions opt;
  opt.dtype = dtype == 0 ? at::kFloat : at::kBFloat16;
  if (!m) m = std::make_unique<LlamaModel>(LlamaModel::random(ModelConfig::named_shape(shape_of(shape)), 0, opt));
  return *m;
}

// The best matmul GFLOP/s this run has measured (BM_Matmul runs first; measured here if filtered out).
double& best_matmul_gflops() {
  static double best = 0;
  return best;
}
double matmul_ceiling() {
  if (best_matmul_gflops() == 0) {
    at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
    at::matmul(a, b);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 8; ++i) at::matmul(a, b);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best_matmul_gflops() = 8 * 2.0 * 1024 * 1024 * 1024 / s / 1e9;
  }
  return best_matmul_gflops();
}

// FLOPs of one forward over T new tokens after `past` cached ones (matmuls only); the LM head runs
// on the last token only (the benchmarks ask for last_only logits).
double forward_flops(const ModelConfig& c, int64_t T, int64_t past) {
  const double per_token = c.num_hidden_layers * (2.0 * c.hidden_size * (c.q_dim() + 2 * c.kv_dim()) +
                                                  2.0 * c.q_dim() * c.hidden_size +
                                                  6.0 * c.hidden_size * c.intermediate_size);
  const double avg_keys = past + (T + 1) / 2.0;  // causal: query t sees past + t + 1 keys
  const double attn = c.num_hidden_layers * 4.0 * c.q_dim() * avg_keys;
  return T * (per_token + attn) + 2.0 * c.vocab_size * c.hidden_size;
}

void BM_Matmul(benchmark::State& state) {
  const int64_t n = state.range(0);
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) benchmark::DoNotOptimize(at::matmul(a, b));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  best_matmul_gflops() = std::max(best_matmul_gflops(), 2.0 * n * n * n * state.iterations() / s / 1e9);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Matmul)->Arg(512)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// x [M, 2048] @ W^T for W [16384, 2048] (64 MiB in bf16: larger than the caches, like a model's
// weights streamed per step): path 0 = the 16-bit kernel over all rows (what kvlab::linear does up
// to kDirectRows rows), 1 = kvlab::linear (the kernel or widened tiles + BLAS, by M), 2 = fp32
// weights through at::linear (an fp32 model: twice the bytes). GB_s = weight bytes read per second.
void BM_Linear16(benchmark::State& state) {
  c10::AutoGradMode no_grad(false);
  const int64_t M = state.range(0), path = state.range(1), N = 16384, K = 2048;
  at::Tensor w32 = at::randn({N, K}) * 0.02;
  at::Tensor w16 = w32.to(at::kBFloat16);
  if (path != 2) w32 = at::Tensor();
  at::Tensor x = at::randn({M, K});
  at::Tensor y = at::empty({M, N});
  for (auto _ : state) {
    if (path == 0) {
      at::parallel_for(0, N, N / at::get_num_threads(), [&](int64_t n0, int64_t n1) {
        kvlab::kernels::linear16_rows(x.data_ptr<float>(), M, K, w16.data_ptr(), kvlab::kernels::RowType::BF16, n0, n1,
                                      y.data_ptr<float>(), N);
      });
    } else if (path == 1) {
      y = kvlab::linear(x, w16);
    } else {
      y = at::linear(x, w32);
    }
    benchmark::DoNotOptimize(y.data_ptr());
  }
  const double wbytes = static_cast<double>(N * K) * (path == 2 ? 4 : 2);
  state.counters["GB_s"] = benchmark::Counter(wbytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(path == 0 ? "bf16 kernel" : path == 1 ? "bf16 kvlab::linear" : "fp32 at::linear");
}
BENCHMARK(BM_Linear16)
    ->ArgsProduct({{1, 4, 8, 16, 64}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Prefill of T tokens (batch 1) into an empty cache; dtype 0 = fp32, 1 = bf16 weights.
void BM_Prefill(benchmark::State& state) {
  c10::AutoGradMode no_grad(false);
  LlamaModel& m = model_for(state.range(0), state.range(2));
  const int64_t T = state.range(1);
  at::Tensor ids = at::randint(0, m.config().vocab_size, {1, T}, at::kLong);
  const double ceiling = matmul_ceiling();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    KvCache cache = m.make_full_precision_cache();
    benchmark::DoNotOptimize(m.forward(ids, cache, std::nullopt, /*last_only=*/true));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double gflops = forward_flops(m.config(), T, 0) * state.iterations() / s / 1e9;
  state.SetLabel(std::string(shape_of(state.range(0))) + (state.range(2) == 0 ? ", fp32" : ", bf16"));
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = gflops;
  state.counters["of_matmul"] = gflops / ceiling;
}
BENCHMARK(BM_Prefill)
    ->ArgsProduct({{0, 1, 2}, {128, 512}, {0}})
    ->Args({2, 688, 0})
    ->Args({2, 688, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// One decode step (batch B) after a prompt of `ctx` tokens. Each step appends its token, so the
// iteration count is fixed (64) to keep the context within ctx..ctx+64.
void BM_Decode(benchmark::State& state) {
  c10::AutoGradMode no_grad(false);
  LlamaModel& m = model_for(state.range(0), state.range(3));
  const int64_t ctx = state.range(1), B = state.range(2);
  KvCache cache = m.make_full_precision_cache();
  m.forward(at::randint(0, m.config().vocab_size, {B, ctx}, at::kLong), cache, std::nullopt, true);
  at::Tensor next = at::randint(0, m.config().vocab_size, {B, 1}, at::kLong);
  for (auto _ : state) benchmark::DoNotOptimize(m.forward(next, cache, std::nullopt, true));
  state.SetLabel(std::string(shape_of(state.range(0))) + (state.range(3) == 0 ? ", fp32" : ", bf16"));
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(B), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(B * forward_flops(m.config(), 1, ctx) / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
// Weights' memory traffic bounds a small batch: bf16 weights read at 2 bytes beat fp32 ones.
BENCHMARK(BM_Decode)
    ->ArgsProduct({{0, 1, 2}, {512}, {1, 8}, {0, 1}})
    ->Iterations(64)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

