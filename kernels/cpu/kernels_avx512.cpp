// The CPU kernels built with AVX-512 F/VL/BW/DQ on top of AVX2 + FMA + F16C (this file alone
// gets those flags; see CMakeLists.txt). Adds the table-lookup 2-bit decode loops.
#define KVLAB_KERNEL_ISA avx512
#include "kernel_loops.h"
#include "hadamard_loops.h"
