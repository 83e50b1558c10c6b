#pragma once
// Runs the kvlab binary (KVLAB_BINARY), or any command, as a user would: stdout, stderr and exit code.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

namespace kvlab::test {

struct CliRun {
  int code;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a shell command line; stderr goes to err_path.
inline CliRun run_command(const std::string& command, const std::string& err_path) {
  const std::string cmd = command + " 2>" + err_path;
  CliRun r{};
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_path);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  return r;
}

// kvlab with args (and environment assignments env before it).
inline CliRun run_kvlab(const std::string& args, const std::string& err_path, const std::string& env = "") {
  return run_command(env + (env.empty() ? "" : " ") + std::string(KVLAB_BINARY) + " " + args, err_path);
}

// A failed command says what is wrong in exactly one line on stderr that contains needle.
inline void expect_one_line_error(const CliRun& r, const std::string& needle) {
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace kvlab::test
