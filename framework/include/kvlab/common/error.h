#pragma once
// The one exception type of kvlab. Its message is a single line that names the file, key or value
// at fault; the CLI prints it as "kvlab: error: <message>" and exits non-zero.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace kvlab {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws kvlab::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace kvlab
