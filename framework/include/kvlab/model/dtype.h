#pragma once
// Names of the floating-point types a model can run in, and the device string parser.
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace kvlab {

// "float32"/"fp32"/"float", "bfloat16"/"bf16", "float16"/"fp16"/"half". Throws naming the value.
c10::ScalarType parse_dtype(const std::string& name);
std::string dtype_name(c10::ScalarType t);  // "float32", "bfloat16", "float16"
// "cpu", "cuda", "cuda:1". Throws naming the value; "cuda" without a GPU is an error too.
c10::Device parse_device(const std::string& name);

// The cores this process may run on (its CPU affinity: taskset, cgroup cpusets, Slurm's allocation).
int available_cores();

// Sets LibTorch's intra-op thread count (LibTorch would otherwise pick one thread here) and returns
// it: n = 0 means every available core; more than available_cores() is capped there, with one line
// on stderr naming `what` (the flag or key that gave n); n < 0 is an error.
int set_threads(int n, const std::string& what = "--threads");

}  // namespace kvlab
