#pragma once
// Which build of the CPU kernels runs: "avx2" (AVX2 + FMA present) or "generic". The environment
// variable KVLAB_KERNELS=generic forces the baseline build (to compare, or to rule it out).
namespace kvlab::kernels {
const char* kernel_isa();
}  // namespace kvlab::kernels
