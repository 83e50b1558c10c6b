#include "kvlab/runner/staging.h"

#include <fcntl.h>
#include <cerrno>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "kvlab/common/error.h"

namespace kvlab {
namespace fs = std::filesystem;
namespace {

// An exclusive flock on "<parent>/.<name>.lock" while a process builds the folder, so that two
// processes wanting it at once build it once: the second waits, then finds it built. The kernel
// drops the lock when its holder dies. Without locking (some network file systems) both build and
// the first rename wins, as before.
class BuildLock {
 public:
  explicit BuildLock(const fs::path& target)
      : path_(target.parent_path() / fmt::format(".{}.lock", target.filename().string())) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0) return;
    int rc;
    while ((rc = ::flock(fd_, LOCK_EX)) != 0 && errno == EINTR) {
    }
    held_ = rc == 0;
  }
  bool held() const { return held_; }
  // Called once the folder is in place: later processes see it and never take the lock.
  void remove_file() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  ~BuildLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  BuildLock(const BuildLock&) = delete;
  BuildLock& operator=(const BuildLock&) = delete;

 private:
  fs::path path_;
  int fd_ = -1;
  bool held_ = false;
};

// Staging folders of builds that died (killed runs): with the lock held, no live build owns one.
void remove_dead_staging(const fs::path& target) {
  const std::string prefix = fmt::format(".{}.staging-", target.filename().string());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(target.parent_path(), ec)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) {
      std::error_code ignore;
      fs::remove_all(e.path(), ignore);
    }
  }
}

}  // namespace

std::string build_once(const std::string& final_dir, const std::function<void(const std::string&)>& build) {
  if (fs::exists(final_dir)) return final_dir;
  const fs::path target(final_dir);
  fs::create_directories(target.parent_path());
  BuildLock lock(target);
  if (fs::exists(final_dir)) {  // built by the process we waited for
    lock.remove_file();
    return final_dir;
  }
  if (lock.held()) remove_dead_staging(target);
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
  lock.remove_file();
  return final_dir;
}

}  // namespace kvlab
