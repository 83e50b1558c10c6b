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

// Sets LibTorch's intra-op thread count (LibTorch would otherwise pick one thread here);
// n <= 0 means every hardware thread.
void set_threads(int n);

}  // namespace kvlab
