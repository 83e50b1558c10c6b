#include "memory_bandwidth.h"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace kvlab::bench {
namespace {

constexpr int64_t kElems = 32 << 20;  // 3 arrays x 128 MiB

// a = b + s * c over [begin, end), split over threads.
void triad(float* a, const float* b, const float* c, float s) {
  at::parallel_for(0, kElems, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) a[i] = b[i] + s * c[i];
  });
}

double measure() {
  std::vector<float> a(kElems), b(kElems, 1.f), c(kElems, 2.f);
  at::parallel_for(0, kElems, 1 << 16, [&](int64_t begin, int64_t end) {  // first touch by the threads that use it
    std::fill(a.data() + begin, a.data() + end, 0.f);
  });
  double best = 0;
  for (int rep = 0; rep < 6; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    triad(a.data(), b.data(), c.data(), 3.f);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(a.data());
    best = std::max(best, 3.0 * kElems * sizeof(float) / sec / 1e9);  // STREAM counts 3 arrays
  }
  return best;
}

}  // namespace

double triad_gbs() {
  static const double gbs = measure();
  return gbs;
}

}  // namespace kvlab::bench
