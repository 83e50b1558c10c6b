#pragma once
// Shared by the libFuzzer targets: kvlab's parsers read paths, so each input is written to a file in
// a private folder (on /dev/shm when it exists, so no disk is touched), and the parser runs under
// run_parser: a refused input is one kvlab::Error and passes; any other exception escaping a parser
// is a finding (bad input must be one clear kvlab::Error), and aborts so that libFuzzer keeps it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "kvlab/common/error.h"

namespace kvlab::fuzz {

inline const std::string& work_dir() {
  // Never destroyed: the exit handler that removes the folder runs after static destructors.
  static const std::string* dir = [] {
    std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    auto* templ = new std::string(base + "/kvlab_fuzz_XXXXXX");
    if (mkdtemp(templ->data()) == nullptr) std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(work_dir(), ec);
    });
    return templ;
  }();
  return *dir;
}

// Writes the input to <work_dir>/<name> and returns the path.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = work_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();
  return path;
}

template <typename F>
void run_parser(F&& parse) {
  try {
    parse();
  } catch (const kvlab::Error&) {
    // refused with a message: what bad input must give
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: an exception other than kvlab::Error escaped: %s\n", e.what());
    std::abort();
  }
}

}  // namespace kvlab::fuzz
