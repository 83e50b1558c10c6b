// The definition of a matmul against 16-bit weights: widen each weight, accumulate in double.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "kvlab/kernels/linear16.h"

namespace kvlab::kernels::reference {

void linear16_rows(const float* x, int64_t M, int64_t K, const void* w, RowType type, int64_t n0, int64_t n1, float* y,
                   int64_t ldy) {
  auto weight = [&](int64_t i) -> double {
    return type == RowType::F16 ? static_cast<float>(static_cast<const c10::Half*>(w)[i])
                                : static_cast<float>(static_cast<const c10::BFloat16*>(w)[i]);
  };
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[m * K + k]) * weight(n * K + k);
      y[m * ldy + n] = static_cast<float>(acc);
    }
}

}  // namespace kvlab::kernels::reference
