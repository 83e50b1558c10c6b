// Benchmark driver: prints the machine's triad bandwidth and the kernel build first, so every
// figure below can be read against them.
//   ./build/kvlab_bench                          (all)
//   ./build/kvlab_bench --benchmark_filter=Kernel (the KV-cache kernels)
//   KVLAB_BENCH_THREADS=1 ./build/kvlab_bench ...   (one thread)
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>

#include "kvlab/kernels/cpu_features.h"
#include "kvlab/model/dtype.h"
#include "memory_bandwidth.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // KVLAB_BENCH_THREADS=N pins the thread count (default: every core).
  const char* threads = std::getenv("KVLAB_BENCH_THREADS");
  kvlab::set_threads(threads ? std::atoi(threads) : 0);
  std::printf("kvlab: %d threads, kernels %s, triad memory bandwidth %.1f GB/s\n", at::get_num_threads(),
              kvlab::kernels::kernel_isa(), kvlab::bench::triad_gbs());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
