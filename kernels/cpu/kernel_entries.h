#pragma once
// Declarations of the per-ISA entry points defined by kernel_loops.h, and the run-time choice.
#include <c10/util/Half.h>

#include <cstdint>

#include "kvlab/kernels/cpu_features.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packed_attention.h"

#define KVLAB_DECLARE_KERNEL_ENTRIES(ns)                                                                        \
  namespace kvlab::kernels::ns {                                                                                \
  void quantize_per_token_entry(const float*, int64_t, int64_t, int64_t, const QuantShape&, uint32_t*, float*,  \
                                float*);                                                                        \
  void quantize_per_token_entry(const float*, int64_t, int64_t, int64_t, const QuantShape&, uint32_t*,          \
                                c10::Half*, c10::Half*);                                                        \
  void quantize_per_channel_entry(const float*, int64_t, int64_t, int64_t, const QuantShape&, uint32_t*,        \
                                  float*, float*);                                                              \
  void quantize_per_channel_entry(const float*, int64_t, int64_t, int64_t, const QuantShape&, uint32_t*,        \
                                  c10::Half*, c10::Half*);                                                      \
  void dequantize_per_token_entry(const uint32_t*, const float*, const float*, int64_t, int64_t,                \
                                  const QuantShape&, float*, int64_t);                                          \
  void dequantize_per_token_entry(const uint32_t*, const c10::Half*, const c10::Half*, int64_t, int64_t,        \
                                  const QuantShape&, float*, int64_t);                                          \
  void dequantize_per_channel_entry(const uint32_t*, const float*, const float*, int64_t, int64_t,              \
                                    const QuantShape&, float*, int64_t);                                        \
  void dequantize_per_channel_entry(const uint32_t*, const c10::Half*, const c10::Half*, int64_t, int64_t,      \
                                    const QuantShape&, float*, int64_t);                                        \
  void decode_attention_entry(const float*, int64_t, int64_t, const PackedStream&, const Rows&,                 \
                              const PackedStream&, const Rows&, float, float*, float*);                         \
  void linear16_entry(const float*, int64_t, int64_t, const void*, RowType, int64_t, int64_t, float*, int64_t);   \
  void widen_entry(const void*, RowType, int64_t, float*);                                                      \
  }

KVLAB_DECLARE_KERNEL_ENTRIES(generic)
KVLAB_DECLARE_KERNEL_ENTRIES(avx2)
KVLAB_DECLARE_KERNEL_ENTRIES(avx512)
#undef KVLAB_DECLARE_KERNEL_ENTRIES

namespace kvlab::kernels {
enum class KernelIsa { Generic, Avx2, Avx512 };
// The best build this CPU runs, or the one KVLAB_KERNELS names (generic, avx2, avx512).
KernelIsa active_isa();
// Whether this CPU can run that build at all (tests compare every build it can run).
bool cpu_runs(KernelIsa isa);
}  // namespace kvlab::kernels
