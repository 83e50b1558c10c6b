#include "kvlab/runner/cell_claims.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "kvlab/common/error.h"

namespace kvlab {
namespace {

// The byte a cell locks: a 64-bit FNV-1a hash of its id, kept below 2^62 so that it is a valid
// offset. Two ids sharing a byte would only make one wait for the other, never run a cell twice.
off_t lock_offset(const std::string& cell_id) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : cell_id) h = (h ^ c) * 1099511628211ull;
  return static_cast<off_t>(h >> 2);
}

}  // namespace

CellClaims::CellClaims(const std::string& store_path) : path_(store_path + "-claims") {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) fail("{}: cannot open the claims file beside the results store: {}", path_, std::strerror(errno));
}

CellClaims::~CellClaims() {
  if (fd_ >= 0) ::close(fd_);
}

bool CellClaims::lock(const std::string& cell_id, bool wait) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = lock_offset(cell_id);
  fl.l_len = 1;
  for (;;) {
    if (::fcntl(fd_, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return false;  // held by another process
    return true;  // no locking here (e.g. ENOLCK on some network file systems): run as before
  }
}

bool CellClaims::try_claim(const std::string& cell_id) { return lock(cell_id, false); }

void CellClaims::claim_waiting(const std::string& cell_id) { lock(cell_id, true); }

void CellClaims::release(const std::string& cell_id) {
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = lock_offset(cell_id);
  fl.l_len = 1;
  ::fcntl(fd_, F_OFD_SETLK, &fl);
}

}  // namespace kvlab
