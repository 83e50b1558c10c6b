#include "kvlab/common/process_usage.h"

#include <malloc.h>
#include <sys/resource.h>

#include <fstream>
#include <map>
#include <mutex>
#include <string>

namespace kvlab {
namespace {

// A "Name:   123 kB" line of /proc/self/status, in bytes.
int64_t status_kb(const char* name) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(name) + ":";
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) {
      try {
        return std::stoll(line.substr(key.size())) * 1024;
      } catch (const std::exception&) {
        return -1;
      }
    }
  return -1;
}

std::mutex hooks_mutex;
std::map<c10::DeviceType, DeviceMemoryHooks>& hooks_table() {
  static std::map<c10::DeviceType, DeviceMemoryHooks> table;
  return table;
}

}  // namespace

double process_cpu_seconds() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0.0;
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return s(u.ru_utime) + s(u.ru_stime);
}

int64_t current_rss_bytes() { return status_kb("VmRSS"); }
int64_t peak_rss_bytes() { return status_kb("VmHWM"); }

bool reset_peak_rss() {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  std::ofstream out("/proc/self/clear_refs");
  if (!out) return false;
  out << "5\n";
  out.flush();
  return static_cast<bool>(out);
}

void register_device_memory_hooks(c10::DeviceType type, DeviceMemoryHooks hooks) {
  std::lock_guard<std::mutex> lock(hooks_mutex);
  hooks_table()[type] = std::move(hooks);
}

const DeviceMemoryHooks* device_memory_hooks(c10::DeviceType type) {
  std::lock_guard<std::mutex> lock(hooks_mutex);
  auto it = hooks_table().find(type);
  return it == hooks_table().end() ? nullptr : &it->second;
}

}  // namespace kvlab
