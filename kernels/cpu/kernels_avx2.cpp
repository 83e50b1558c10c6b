// The CPU kernels built with AVX2 + FMA (this file alone gets -mavx2 -mfma; see CMakeLists.txt).
#define KVLAB_KERNEL_ISA avx2
#include "kernel_loops.h"
#include "hadamard_loops.h"
