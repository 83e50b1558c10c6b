#include "kvlab/model/dtype.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <thread>

#include "kvlab/common/error.h"

namespace kvlab {

c10::ScalarType parse_dtype(const std::string& n) {
  if (n == "float32" || n == "fp32" || n == "float") return c10::kFloat;
  if (n == "bfloat16" || n == "bf16") return c10::kBFloat16;
  if (n == "float16" || n == "fp16" || n == "half") return c10::kHalf;
  fail("unknown dtype '{}' (valid: float32, bfloat16, float16)", n);
}

std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    case c10::kDouble: return "float64";
    default: return c10::toString(t);
  }
}

c10::Device parse_device(const std::string& name) {
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const std::exception&) {
    fail("unknown device '{}' (valid: cpu, cuda, cuda:N)", name);
  }
  if (device.is_cuda() && !at::hasCUDA())
    fail("device '{}' requested but this build or machine has no CUDA GPU", name);
  if (!device.is_cpu() && !device.is_cuda()) fail("unsupported device '{}' (valid: cpu, cuda)", name);
  return device;
}

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int set_threads(int n, const std::string& what) {
  if (n < 0) fail("{} {}: give 0 (every core) or a positive count", what, n);
  const int cores = available_cores();
  if (n == 0) {
    n = cores;
  } else if (n > cores) {
    // More threads than cores only adds contention: LibTorch's workers spin and wait on each other.
    fmt::print(stderr, "kvlab: {} {} exceeds the {} cores available; using {}\n", what, n, cores, cores);
    n = cores;
  }
  at::set_num_threads(n);
  return n;
}

}  // namespace kvlab
