// Benchmark driver: prints the machine's triad bandwidth and the kernel build first, so every
// figure below can be read against them.
//   ./build/kvlab_bench                          (all)
//   ./build/kvlab_bench --benchmark_filter=Kernel (the KV-cache kernels)
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <cstdio>

#include "kvlab/kernels/cpu_features.h"
#include "kvlab/model/dtype.h"
#include "memory_bandwidth.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  kvlab::set_threads(0);
  std::printf("kvlab: %d threads, kernels %s, triad memory bandwidth %.1f GB/s\n", at::get_num_threads(),
              kvlab::kernels::kernel_isa(), kvlab::bench::triad_gbs());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
