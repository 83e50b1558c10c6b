#include "kvlab/common/input_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "kvlab/common/error.h"

namespace kvlab {
namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a file";
}

}  // namespace

void check_input_file(const std::string& path, const std::string& what, uint64_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return;  // the reader says "not found" its own way
    fail("{}: cannot read {}: {}", path, what, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) fail("{}: {} is {}, not a regular file", path, what, kind_of(st.st_mode));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) fail("{}: {} is {} bytes, above the limit of {} bytes", path, what, size, max_bytes);
}

bool getline_at_most(std::istream& in, std::string& line, uint64_t max_bytes, const std::string& path,
                     int64_t line_no) {
  line.clear();
  std::streambuf* buf = in.rdbuf();
  if (buf == nullptr || !in.good()) return false;
  for (;;) {
    const int c = buf->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      in.setstate(std::ios::eofbit);
      return !line.empty();
    }
    if (c == '\n') return true;
    if (line.size() >= max_bytes) fail("{}:{}: line is longer than the limit of {} bytes", path, line_no, max_bytes);
    line.push_back(static_cast<char>(c));
  }
}

}  // namespace kvlab
