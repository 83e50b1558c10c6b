// Rounding and averaging exactly as the LongBench scorer's Python and numpy do them.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "kvlab/eval/longbench/metrics.h"

namespace kvlab::longbench {
namespace {

// numpy's pairwise_sum for float64 (numpy/_core/src/umath/loops_utils.h.src): below 8 values a
// plain loop; up to 128 eight interleaved accumulators combined as a tree, then the remainder;
// above that, split in two halves at a multiple of 8 and recurse.
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double res = 0.0;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

}  // namespace

double python_round(double x, int ndigits) {
  if (!std::isfinite(x)) return x;
  // glibc's printf rounds the exact binary value correctly (ties to even), as CPython's dtoa does.
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.*f", ndigits, x);
  return std::strtod(buf, nullptr);
}

double numpy_round(double x, int ndigits) {
  const double f = std::pow(10.0, ndigits);
  return std::nearbyint(x * f) / f;
}

double numpy_mean(const std::vector<double>& values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  return pairwise_sum(values.data(), values.size()) / static_cast<double>(values.size());
}

}  // namespace kvlab::longbench
