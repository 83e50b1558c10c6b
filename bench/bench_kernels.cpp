// The KV-cache kernels on one layer's worth of heads, split over the threads as the cache does.
//   KernelQuantize/<axis 0 token, 1 channel>/<bits>: quantize + pack fp32 K/V (8 heads x 4096 tokens
//     x 128 dims); GB/s of input and the fraction of the triad bandwidth (target >= 0.5).
//   KernelDecodeAttention/<shape>/<tokens>/<kind>: one decode step of attention for one layer.
//     shape 0 = Llama-2-7B (32 kv-heads, 1 query each), 1 = Llama-3-8B (8 kv-heads, 4 queries each);
//     kind 0 = fp32 through ATen (the framework's full-precision attention), 1 = fp32 through the
//     kernel's exact path, 2 / 4 = a KIVI cache of that many bits (keys per-channel, values
//     per-token, G = 32, fp16 scales, last 128 tokens exact). speedup_vs_fp32 divides the faster
//     fp32 time at the same shape and length by this one (target >= 3 at 8K tokens, 2 bits).
//   KernelHadamard/<d>: the normalized Walsh-Hadamard transform of rows of d floats (a rotated
//     cache's q / k / v / output rotation); ns per row and GB/s.
//   KernelDecodeStepRotation/<shape>/<bits>: one decode step of one layer through the framework's
//     cache (make_cache: append, flush, packed attention; a KIVI cache, G 32, R 128) at 8K context
//     (256 steps from 8064 tokens, so the mean context is 8192), without and with Hadamard rotation
//     of keys and values, the two caches stepping in turn; shape 0 = Llama-2-7B, 1 = Llama-3-8B,
//     2 = SmolLM2-135M (3 kv-heads x 3 queries, head_dim 64). us_per_step / rotated_us_per_step are
//     wall times, cpu_* the process's CPU time per step (on a shared machine, what a step costs
//     rather than how long it waited); rotation_cost = rotated / unrotated CPU time - 1.
//   ./build/kvlab_bench --benchmark_filter=Kernel
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <c10/util/Half.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <vector>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/hadamard.h"
#include "kvlab/model/attention.h"
#include "kvlab/kernels/packed_attention.h"
#include "kvlab/kernels/packing.h"
#include "kvlab/quant/kv_method.h"
#include "kvlab/model/model_config.h"
#include "memory_bandwidth.h"

namespace {

using namespace kvlab::kernels;

constexpr int64_t kHeads = 8, kDim = 128, kGroup = 32, kResidual = 128;

struct LayerShape {
  const char* name;
  int64_t kv_heads, queries_per_head;
};
const LayerShape kShapes[] = {{"llama2-7b", 32, 1}, {"llama3-8b", 8, 4}};

// Cheap pseudo-random values in [-2, 2) (xorshift): setting up a 32K-token layer stays quick.
std::vector<float> random_values(int64_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (auto& f : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    f = static_cast<float>(x >> 40) * (4.f / 16777216.f) - 2.f;
  }
  return v;
}

void BM_KernelQuantize(benchmark::State& state) {
  const bool per_token = state.range(0) == 0;
  const QuantShape q{static_cast<int>(state.range(1)), kGroup, false};
  const int64_t T = 4096;  // 16 MiB of fp32 input over the 8 heads
  const std::vector<float> x = random_values(kHeads * T * kDim, 1);
  const int64_t words = per_token ? T * packed_words(kDim, q.bits) : (T / kGroup) * kDim * packed_words(kGroup, q.bits);
  const int64_t params = per_token ? T * kDim / kGroup : T / kGroup * kDim;
  std::vector<uint32_t> codes(kHeads * words);
  std::vector<c10::Half> scales(kHeads * params), zeros(kHeads * params);
  for (auto _ : state) {
    at::parallel_for(0, kHeads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t h = begin; h < end; ++h) {
        const float* xh = x.data() + h * T * kDim;
        if (per_token)
          quantize_per_token<c10::Half>(xh, T, kDim, kDim, q, codes.data() + h * words, scales.data() + h * params,
                                        zeros.data() + h * params);
        else
          quantize_per_channel<c10::Half>(xh, T, kDim, kDim, q, codes.data() + h * words,
                                          scales.data() + h * params, zeros.data() + h * params);
      }
    });
    benchmark::DoNotOptimize(codes.data());
  }
  const double bytes = static_cast<double>(x.size() * sizeof(float)) * state.iterations();
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["of_triad"] =
      benchmark::Counter(bytes / 1e9 / kvlab::bench::triad_gbs(), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(per_token ? "per-token" : "per-channel") + ", " + std::to_string(q.bits) + " bits");
}
BENCHMARK(BM_KernelQuantize)->ArgsProduct({{0, 1}, {2, 4}})->Unit(benchmark::kMillisecond)->UseRealTime();

// One layer's cache: per head, packed K (per-channel) and V (per-token) or fp32 rows only.
struct LayerCache {
  int64_t heads = 0, tokens = 0, packed = 0;
  int bits = 0;
  std::vector<float> k_full, v_full;  // [heads, tokens - packed, D]
  std::vector<uint32_t> k_codes, v_codes;
  std::vector<c10::Half> k_s, k_z, v_s, v_z;
  int64_t k_words = 0, v_words = 0, k_params = 0, v_params = 0;

  LayerCache(int64_t H, int64_t S, int b) : heads(H), tokens(S), bits(b) {
    packed = b == 0 ? 0 : (S - kResidual) / kGroup * kGroup;
    const int64_t full = S - packed;
    const std::vector<float> k = random_values(heads * S * kDim, 2), v = random_values(heads * S * kDim, 3);
    k_full.resize(heads * full * kDim), v_full.resize(heads * full * kDim);
    for (int64_t h = 0; h < heads; ++h) {
      std::copy_n(k.data() + (h * S + packed) * kDim, full * kDim, k_full.data() + h * full * kDim);
      std::copy_n(v.data() + (h * S + packed) * kDim, full * kDim, v_full.data() + h * full * kDim);
    }
    if (b == 0) return;
    const QuantShape q{b, kGroup, false};
    k_words = packed / kGroup * kDim * packed_words(kGroup, b), k_params = packed / kGroup * kDim;
    v_words = packed * packed_words(kDim, b), v_params = packed * kDim / kGroup;
    k_codes.resize(heads * k_words), v_codes.resize(heads * v_words);
    k_s.resize(heads * k_params), k_z.resize(heads * k_params);
    v_s.resize(heads * v_params), v_z.resize(heads * v_params);
    at::parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t h = begin; h < end; ++h) {
        quantize_per_channel<c10::Half>(k.data() + h * S * kDim, packed, kDim, kDim, q,
                                        k_codes.data() + h * k_words, k_s.data() + h * k_params,
                                        k_z.data() + h * k_params);
        quantize_per_token<c10::Half>(v.data() + h * S * kDim, packed, kDim, kDim, q, v_codes.data() + h * v_words,
                                      v_s.data() + h * v_params, v_z.data() + h * v_params);
      }
    });
  }

  PackedStream stream(bool keys, int64_t h) const {
    PackedStream s;
    s.granularity = keys ? Granularity::PerChannel : Granularity::PerToken;
    s.shape = {bits == 0 ? 2 : bits, kGroup, false};
    s.param = ParamType::F16;
    s.tokens = packed;
    if (packed == 0) return s;
    s.codes = keys ? k_codes.data() + h * k_words : v_codes.data() + h * v_words;
    s.scales = keys ? k_s.data() + h * k_params : v_s.data() + h * v_params;
    s.zeros = keys ? k_z.data() + h * k_params : v_z.data() + h * v_params;
    return s;
  }

  double bytes() const {
    const double full = static_cast<double>(k_full.size() + v_full.size()) * sizeof(float);
    return full + (k_codes.size() + v_codes.size()) * 4.0 + (k_s.size() * 2 + v_s.size() * 2) * 2.0;
  }
};

// Fastest fp32 step seen per (shape, tokens).
std::map<std::pair<int64_t, int64_t>, double>& fp32_seconds() {
  static std::map<std::pair<int64_t, int64_t>, double> m;
  return m;
}

void BM_KernelDecodeAttention(benchmark::State& state) {
  const LayerShape& shape = kShapes[state.range(0)];
  const int64_t S = state.range(1), kind = state.range(2), H = shape.kv_heads, nq = shape.queries_per_head;
  const int bits = kind >= 2 ? static_cast<int>(kind) : 0;
  const LayerCache cache(H, S, bits);
  const std::vector<float> q = random_values(H * nq * kDim, 4);
  std::vector<float> out(H * nq * kDim);
  const float scale = 1.f / std::sqrt(static_cast<float>(kDim));
  const int64_t full = S - cache.packed;
  at::Tensor qt, kt, vt;
  if (kind == 0) {  // the same tokens as tensors for ATen: [1, heads, tokens, D]
    qt = at::from_blob(const_cast<float*>(q.data()), {1, H * nq, 1, kDim});
    kt = at::from_blob(const_cast<float*>(cache.k_full.data()), {1, H, S, kDim});
    vt = at::from_blob(const_cast<float*>(cache.v_full.data()), {1, H, S, kDim});
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (kind == 0) {
      at::Tensor o = kvlab::causal_gqa_attention(qt, kt, vt);
      benchmark::DoNotOptimize(o.data_ptr());
      continue;
    }
    at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> workspace(nq * S);
      for (int64_t h = begin; h < end; ++h)
        packed_decode_attention(q.data() + h * nq * kDim, nq, kDim, cache.stream(true, h),
                                cache.k_full.data() + h * full * kDim, full, cache.stream(false, h),
                                cache.v_full.data() + h * full * kDim, full, scale, out.data() + h * nq * kDim,
                                workspace.data());
    });
    benchmark::DoNotOptimize(out.data());
  }
  const double per_step =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / state.iterations();
  auto& best = fp32_seconds()[{state.range(0), S}];
  if (bits == 0) best = best == 0 ? per_step : std::min(best, per_step);
  else if (best > 0) state.counters["speedup_vs_fp32"] = best / per_step;
  state.counters["cache_MB"] = cache.bytes() / 1e6;
  state.counters["GB/s"] = benchmark::Counter(cache.bytes() * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(shape.name) + ", " +
                 (kind == 0 ? "fp32 ATen" : kind == 1 ? "fp32 kernel" : std::to_string(bits) + "-bit KIVI"));
}
BENCHMARK(BM_KernelDecodeAttention)
    ->ArgsProduct({{0, 1}, {1024, 8192, 32768}, {0, 1, 2, 4}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_KernelHadamard(benchmark::State& state) {
  const int64_t d = state.range(0), rows = 4096;
  std::vector<float> x = random_values(rows * d, 5);
  const std::vector<float> signs = random_values(d, 6);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    hadamard_rows(x.data(), rows, d, signs.data(), nullptr);
    benchmark::DoNotOptimize(x.data());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  state.counters["ns_per_row"] = seconds * 1e9 / (static_cast<double>(rows) * state.iterations());
  const double bytes = static_cast<double>(x.size() * sizeof(float)) * state.iterations();
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_KernelHadamard)->Arg(64)->Arg(128)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_KernelDecodeStepRotation(benchmark::State& state) {
  struct Shape {
    const char* name;
    int64_t kv_heads, queries_per_head, dim;
  };
  const Shape shapes[] = {{"llama2-7b", 32, 1, 128}, {"llama3-8b", 8, 4, 128}, {"smollm2-135m", 3, 3, 64}};
  const Shape& sh = shapes[state.range(0)];
  const int64_t bits = state.range(1);
  constexpr int64_t kSteps = 256, kPrompt = 8192 - kSteps / 2, kChunk = 1024;
  kvlab::ModelConfig c;
  c.num_hidden_layers = 1, c.num_attention_heads = sh.kv_heads * sh.queries_per_head;
  c.num_key_value_heads = sh.kv_heads, c.head_dim = sh.dim, c.hidden_size = c.num_attention_heads * sh.dim;
  const int64_t Hq = c.num_attention_heads, H = sh.kv_heads, D = sh.dim;
  auto tensor = [](int64_t heads, int64_t T, int64_t D, uint32_t seed) {
    const std::vector<float> v = random_values(heads * T * D, seed);
    return at::from_blob(const_cast<float*>(v.data()), {1, heads, T, D}).clone();
  };
  const at::Tensor pq = tensor(Hq, kPrompt, D, 7), pk = tensor(H, kPrompt, D, 8), pv = tensor(H, kPrompt, D, 9);
  std::vector<kvlab::KvCache> caches;  // [unrotated, rotated K+V]
  for (const char* rotate : {"none", "both"}) {
    YAML::Node p;
    p["bits"] = bits, p["group"] = kGroup, p["residual"] = kResidual, p["rotate"] = rotate;
    caches.push_back(kvlab::make_cache(kvlab::MethodRegistry::instance().create("kivi", p)->plan(c),
                                       kvlab::MultiTokenMode::FullPrecision));
    for (int64_t t = 0; t < kPrompt; t += kChunk) {  // in chunks: the scores of one chunk stay small
      const int64_t n = std::min(kChunk, kPrompt - t);
      caches.back().layer(0).attend(pq.narrow(2, t, n), pk.narrow(2, t, n), pv.narrow(2, t, n));
    }
  }
  const at::Tensor q = tensor(Hq, kSteps, D, 10), k = tensor(H, kSteps, D, 11), v = tensor(H, kSteps, D, 12);
  // The two caches step in turn, so a change in the machine's load hits both alike.
  double wall[2] = {0, 0}, cpu[2] = {0, 0};
  int64_t t = 0;
  for (auto _ : state) {
    for (int r = 0; r < 2; ++r) {
      const auto w0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      at::Tensor o = caches[r].layer(0).attend(q.narrow(2, t, 1), k.narrow(2, t, 1), v.narrow(2, t, 1));
      benchmark::DoNotOptimize(o.data_ptr());
      cpu[r] += static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
      wall[r] += std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
    }
    ++t;
  }
  const auto n = static_cast<double>(state.iterations());
  state.counters["us_per_step"] = wall[0] / n * 1e6;
  state.counters["rotated_us_per_step"] = wall[1] / n * 1e6;
  state.counters["cpu_us_per_step"] = cpu[0] / n * 1e6;
  state.counters["rotated_cpu_us_per_step"] = cpu[1] / n * 1e6;
  state.counters["rotation_cost"] = cpu[1] / cpu[0] - 1.0;
  state.SetLabel(std::string(sh.name) + ", " + std::to_string(bits) + "-bit KIVI, unrotated vs rotated K+V");
}
BENCHMARK(BM_KernelDecodeStepRotation)
    ->ArgsProduct({{0, 1, 2}, {2, 4}})
    ->Iterations(256)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
