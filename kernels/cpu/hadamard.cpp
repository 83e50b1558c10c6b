// The public Walsh-Hadamard kernel: argument checks, then the AVX-512, AVX2 or generic build of
// hadamard_loops.h (the AVX-512 build runs the AVX2 loops: one 8-float register per 8 channels is
// already far below the cost of the attention it sits beside).
#include "hadamard_entries.h"
#include "kernel_entries.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/hadamard.h"

namespace kvlab::kernels {
void hadamard_rows(float* x, int64_t rows, int64_t n, const float* pre, const float* post) {
  if (!is_power_of_two(n)) fail("hadamard: length {} is not a power of two", n);
  if (rows < 0) fail("hadamard: {} rows", rows);
  if (rows == 0) return;
  switch (active_isa()) {
    case KernelIsa::Avx512: avx512::hadamard_rows_entry(x, rows, n, pre, post); break;
    case KernelIsa::Avx2: avx2::hadamard_rows_entry(x, rows, n, pre, post); break;
    default: generic::hadamard_rows_entry(x, rows, n, pre, post); break;
  }
}

}  // namespace kvlab::kernels
