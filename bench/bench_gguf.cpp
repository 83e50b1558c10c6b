// GGUF loading: dequantization throughput per type (GB/s of fp32 written), and the wall time of
// loading the real SmolLM2-135M-Instruct file (model + tokenizer, as `kvlab eval ppl` does; the
// target is well under 5 s on 2 cores).
//   ./build/kvlab_bench --benchmark_filter=Gguf
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>
#include <vector>

#include "kvlab/model/gguf_dequant.h"
#include "kvlab/model/gguf_model.h"

namespace {

using kvlab::GgmlType;

// 16M elements of random blocks of one type, dequantized to fp32.
void BM_GgufDequantize(benchmark::State& state) {
  const auto info = *kvlab::ggml_type_info(static_cast<uint32_t>(state.range(0)));
  const int64_t n = int64_t{1} << 24, blocks = n / info.block;
  std::vector<uint8_t> src(static_cast<size_t>(blocks * info.bytes));
  std::mt19937 rng(1);
  for (auto& b : src) b = static_cast<uint8_t>(rng());
  for (int64_t b = 0; info.block > 1 && b < blocks; ++b) {  // finite f16 scales at the block's first bytes
    src[static_cast<size_t>(b * info.bytes)] = 0x00;
    src[static_cast<size_t>(b * info.bytes + 1)] = 0x20;
  }
  std::vector<float> dst(static_cast<size_t>(n));
  for (auto _ : state) {
    kvlab::dequantize_to_f32(info.type, src.data(), dst.data(), n);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetLabel(info.name);
  state.counters["GB/s out"] = benchmark::Counter(4.0 * n / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_GgufDequantize)
    ->ArgsProduct({{0, 1, 30, 8, 2, 3, 6, 7, 10, 11, 12, 13, 14}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

std::string smollm2_path() {
  const char* env = std::getenv("KVLAB_SHARED");
  const std::string shared = env && *env ? env : std::string(KVLAB_SOURCE_DIR) + "/../shared";
  return shared + "/data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// Opening, dequantizing every weight into fp32 and building the tokenizer.
void BM_GgufLoadSmolLM2(benchmark::State& state) {
  const std::string path = smollm2_path();
  if (!std::filesystem::exists(path)) {
    state.SkipWithError(("no " + path).c_str());
    return;
  }
  for (auto _ : state) {
    kvlab::GgufFile f(path);
    auto model = kvlab::load_gguf_model(f);
    auto tok = kvlab::gguf_tokenizer(f);
    benchmark::DoNotOptimize(tok->vocab_size());
  }
  state.SetLabel("SmolLM2-135M-Instruct Q4_1, model + tokenizer, fp32");
}
BENCHMARK(BM_GgufLoadSmolLM2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace
