// The Walsh-Hadamard transform from its definition: y_i = post_i / sqrt(n) * sum_j (-1)^popcount(i & j) pre_j x_j,
// accumulated in double. O(n^2) per row; the fast butterfly (hadamard_loops.h) is tested against it.
#include <cmath>
#include <vector>

#include "kvlab/common/error.h"
#include "kvlab/kernels/hadamard.h"

namespace kvlab::kernels::reference {

void hadamard_rows(float* x, int64_t rows, int64_t n, const float* pre, const float* post) {
  if (!is_power_of_two(n)) fail("hadamard: length {} is not a power of two", n);
  const double norm = 1.0 / std::sqrt(static_cast<double>(n));
  std::vector<double> in(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * n;
    for (int64_t j = 0; j < n; ++j) in[j] = static_cast<double>(row[j]) * (pre ? pre[j] : 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += (__builtin_popcountll(static_cast<uint64_t>(i & j)) & 1) ? -in[j] : in[j];
      row[i] = static_cast<float>(s * norm * (post ? post[i] : 1.0f));
    }
  }
}

}  // namespace kvlab::kernels::reference
