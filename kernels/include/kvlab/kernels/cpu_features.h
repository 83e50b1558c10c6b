#pragma once
// Which build of the CPU kernels runs: "avx512" (AVX-512 F/VL/BW/DQ and AVX2 present), "avx2"
// (AVX2 + FMA + F16C) or "generic". The environment variable KVLAB_KERNELS=generic|avx2|avx512
// forces one (to compare, or to rule one out); naming one this CPU cannot run is an error.
namespace kvlab::kernels {
const char* kernel_isa();
}  // namespace kvlab::kernels
