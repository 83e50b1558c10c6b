#include "kvlab/runner/staging.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "kvlab/common/error.h"

namespace kvlab {
namespace fs = std::filesystem;

std::string build_once(const std::string& final_dir, const std::function<void(const std::string&)>& build) {
  if (fs::exists(final_dir)) return final_dir;
  const fs::path target(final_dir);
  fs::create_directories(target.parent_path());
  std::random_device rd;
  const fs::path staging =
      target.parent_path() / fmt::format(".{}.staging-{}-{:08x}", target.filename().string(), getpid(), rd());
  fs::create_directories(staging);
  try {
    build(staging.string());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(staging, ec);
    throw;
  }
  std::error_code ec;
  fs::rename(staging, target, ec);
  if (ec) {
    // Another process finished first (the target now exists and is not empty): use theirs.
    std::error_code ignore;
    fs::remove_all(staging, ignore);
    if (!fs::exists(target)) fail("{}: cannot move the prepared folder into place: {}", final_dir, ec.message());
  }
  return final_dir;
}

}  // namespace kvlab
