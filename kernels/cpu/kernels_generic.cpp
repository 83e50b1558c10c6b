// The CPU kernels built for the baseline ISA of the distribution (x86-64: SSE2).
#define KVLAB_KERNEL_ISA generic
#include "kernel_loops.h"
#include "hadamard_loops.h"
