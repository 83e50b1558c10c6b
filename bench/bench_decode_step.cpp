// One decode step's attention over every layer of a model's KV cache, against the context length:
// the cost that grows with the context, through the caches the runtime uses (the full-precision
// cache's 16-bit kernel, KIVI's packed kernels), each step appending its token (and flushing).
//   DecodeStep/<shape>/<context>/<method>/<batch>
//     shape 0 = SmolLM2-135M layers (30 layers, 3 kv-heads x 64, 9 query heads)
//     shape 1 = Llama-2-7B layers (32 layers, 32 kv-heads x 128, 32 query heads)
//     method 0 = fp16 cache, 1 = KIVI-2 (keys per-channel, values per-token, G 32, R 128, fp16 scales)
//   Counters: ms_per_step (all layers), KV_MiB held (all layers), GB_s read, vs_fp16 (fp16's time
//   over this one at the same shape, context and batch; target: >= 1 from 4K tokens).
// The caches are filled with synthetic K/V (kvlab::fill_cache_synthetic, packed by KIVI's own
// quantizer). KV memory beyond KVLAB_BENCH_MAX_GIB (default 3) is not allocated: fewer layers are
// run and the step time is scaled to the model's layer count (layers_run says how many ran); a
// case whose single layer exceeds it is skipped.
//   ./build/kvlab_bench --benchmark_filter=DecodeStep
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <tuple>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/eval/throughput.h"
#include "kvlab/quant/kv_method.h"

namespace {

using kvlab::KvCache;

struct LayerShape {
  const char* name;
  int64_t layers, kv_heads, q_heads, head_dim;
};
const LayerShape kShapes[] = {{"smollm2-135m", 30, 3, 9, 64}, {"llama2-7b", 32, 32, 32, 128}};

double max_gib() {
  const char* v = std::getenv("KVLAB_BENCH_MAX_GIB");
  return v ? std::atof(v) : 3.0;
}

kvlab::CachePlan plan_of(int64_t method, int64_t layers) {
  kvlab::CachePlan plan;
  if (method == 0) {
    plan.method = "fp16";
    plan.layers.resize(static_cast<size_t>(layers));
    for (auto& l : plan.layers) l.k_flush.kind = l.v_flush.kind = kvlab::FlushRule::Kind::Never;
    return plan;
  }
  kvlab::ModelConfig c;
  c.num_hidden_layers = layers;
  return kvlab::MethodRegistry::instance().create("kivi", YAML::Load("{bits: 2, group: 32, residual: 128}"))->plan(c);
}

// fp16's step time per (shape, context, batch), for vs_fp16.
std::map<std::tuple<int64_t, int64_t, int64_t>, double>& fp16_ms() {
  static std::map<std::tuple<int64_t, int64_t, int64_t>, double> m;
  return m;
}

void BM_DecodeStep(benchmark::State& state) {
  c10::AutoGradMode no_grad(false);
  const LayerShape& s = kShapes[state.range(0)];
  const int64_t ctx = state.range(1), method = state.range(2), B = state.range(3);
  const double layer_bytes_fp16 = 2.0 * B * s.kv_heads * ctx * s.head_dim * 2;  // K and V, one layer
  const int64_t fit = static_cast<int64_t>(max_gib() * 1073741824.0 / layer_bytes_fp16);
  if (fit < 1) {
    state.SkipWithError("one layer's 16-bit KV exceeds KVLAB_BENCH_MAX_GIB");
    return;
  }
  const int64_t layers = std::min(s.layers, fit);
  KvCache cache = kvlab::make_cache(plan_of(method, layers), kvlab::MultiTokenMode::FullPrecision);
  // One layer's synthetic K/V, stored into every layer (each cache keeps its own copy).
  {
    KvCache one = kvlab::make_cache(plan_of(0, 1), kvlab::MultiTokenMode::FullPrecision);
    kvlab::fill_cache_synthetic(one, B, ctx, s.kv_heads, s.head_dim, at::kHalf, c10::Device(c10::kCPU), 7);
    auto& src = dynamic_cast<kvlab::FullPrecisionLayerCache&>(one.layer(0));
    for (int64_t l = 0; l < layers; ++l) cache.layer(l).fill(src.keys(), src.values());
  }
  at::Generator g = at::detail::createCPUGenerator(3);
  const at::Tensor q = at::normal(0.0, 1.0, {B, s.q_heads, 1, s.head_dim}, g);
  const at::Tensor k = at::normal(0.0, 1.0, {B, s.kv_heads, 1, s.head_dim}, g).to(at::kHalf);
  const at::Tensor v = at::normal(0.0, 1.0, {B, s.kv_heads, 1, s.head_dim}, g).to(at::kHalf);
  auto step = [&] {
    for (int64_t l = 0; l < layers; ++l) benchmark::DoNotOptimize(cache.layer(l).attend(q, k, v).data_ptr());
  };
  for (int i = 0; i < 2; ++i) step();  // untimed: the first append may grow a buffer sized to the fill
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds += dt;
    state.SetIterationTime(dt * static_cast<double>(s.layers) / static_cast<double>(layers));
  }
  const double ms = 1e3 * seconds / static_cast<double>(state.iterations()) * s.layers / layers;
  const double kv_bytes = static_cast<double>(cache.bytes().total()) * s.layers / layers;
  state.counters["ms_per_step"] = ms;
  state.counters["KV_MiB"] = kv_bytes / 1048576.0;
  state.counters["GB_s"] = kv_bytes / (ms * 1e-3) / 1e9;
  state.counters["layers_run"] = static_cast<double>(layers);
  auto& base = fp16_ms()[{state.range(0), ctx, B}];
  if (method == 0) base = ms;
  else if (base > 0) state.counters["vs_fp16"] = base / ms;
  state.SetLabel(std::string(s.name) + (method == 0 ? ", fp16" : ", KIVI-2") + ", batch " + std::to_string(B));
}
BENCHMARK(BM_DecodeStep)
    ->ArgsProduct({{0, 1}, {1024, 2048, 4096, 8192, 16384, 32768}, {0, 1}, {1, 8}})
    ->Iterations(8)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
