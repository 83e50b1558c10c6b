#pragma once
// What a run uses, measured: the process's resident set (Linux /proc), its CPU time, and, through
// hooks a device back end registers, an accelerator's allocator. Throughput runs and `kvlab
// generate` report these. (CPU time matters on a shared machine: wall time there includes waiting
// for cores other processes hold; CPU time does not.)
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>

namespace kvlab {

double process_cpu_seconds();  // user + system CPU time of every thread of the process so far
int64_t current_rss_bytes();  // resident set now (VmRSS); -1 where /proc is unavailable
int64_t peak_rss_bytes();     // the high-water mark since start or the last reset (VmHWM); -1 if unknown
// Starts a new high-water mark at the current resident set (/proc/self/clear_refs). First returns
// freed heap memory to the system (malloc_trim), so that what an earlier run freed but the
// allocator kept does not count against the next one. False where the kernel does not allow it.
bool reset_peak_rss();

// Peak memory of an accelerator's allocator. No hooks exist for the CPU (the process's resident
// set is its memory); a CUDA build registers them (e.g. from the caching allocator's statistics).
struct DeviceMemoryHooks {
  std::function<void(const c10::Device&)> reset_peak;        // start a new peak at the current use
  std::function<int64_t(const c10::Device&)> peak_bytes;     // peak since the last reset
  std::function<int64_t(const c10::Device&)> current_bytes;  // in use now
};
void register_device_memory_hooks(c10::DeviceType type, DeviceMemoryHooks hooks);
// The hooks for the device's type, or nullptr.
const DeviceMemoryHooks* device_memory_hooks(c10::DeviceType type);

}  // namespace kvlab
