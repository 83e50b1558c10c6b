#pragma once
// The per-ISA entry points of hadamard_loops.h (tests call each build directly).
#include <cstdint>

#define KVLAB_DECLARE_HADAMARD_ENTRY(ns) \
  namespace kvlab::kernels::ns {         \
  void hadamard_rows_entry(float* x, int64_t rows, int64_t n, const float* pre, const float* post); \
  }
KVLAB_DECLARE_HADAMARD_ENTRY(generic)
KVLAB_DECLARE_HADAMARD_ENTRY(avx2)
KVLAB_DECLARE_HADAMARD_ENTRY(avx512)
#undef KVLAB_DECLARE_HADAMARD_ENTRY
