// kvlab plot <kind> ...: figures from results (the SQLite store or its CSV export) or from a plan
// file, drawn by the matplotlib scripts in plots/ under Debian's Python. The scripts own their
// options (kvlab plot <kind> --help shows them), so nothing here can drift from them; this command
// finds the script, runs it and turns its failure into kvlab's one error line.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"

namespace kvlab::cli {
namespace {

struct PlotKind {
  const char* name;
  const char* script;  // under the plots directory
  const char* help;
};

const std::vector<PlotKind>& plot_kinds() {
  static const std::vector<PlotKind> kinds = {
      {"tradeoff", "tradeoff.py", "a metric against average bits and cache memory, one line per method (--store F | --csv F)"},
      {"plan", "plan.py", "per-layer K/V bits of a plan file as a heat map (PLAN.yaml)"},
      {"importance", "importance.py", "per-layer k_score / v_score of a plan, bars coloured by assigned bits (PLAN.yaml)"},
      {"longbench", "longbench.py", "LongBench score per task against average bits (--store F | --csv F)"},
      {"retrieval", "retrieval.py", "passkey / needle accuracy over context length x depth, a panel per method (--store F | --csv F)"},
  };
  return kinds;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// The plots/ folder of this checkout; KVLAB_PLOTS_DIR points elsewhere (an installed copy).
std::string plots_dir() { return env_or("KVLAB_PLOTS_DIR", std::string(KVLAB_SOURCE_DIR) + "/plots"); }

// Debian's Python, which sees python3-matplotlib (the pyenv python3 on PATH does not).
std::string python() { return env_or("KVLAB_PYTHON", "/usr/bin/python3"); }

struct Finished {
  int status;        // exit code, or 128 + signal
  std::string err;   // everything the child wrote on stderr
};

// Runs argv[0] with argv; stdout goes straight through, stderr is collected.
Finished run_capturing_stderr(const std::vector<std::string>& argv) {
  int pipe_fd[2];
  if (pipe(pipe_fd) != 0) fail("plot: cannot create a pipe: {}", std::strerror(errno));
  const pid_t pid = fork();
  if (pid < 0) fail("plot: cannot start {}: {}", argv[0], std::strerror(errno));
  if (pid == 0) {
    dup2(pipe_fd[1], STDERR_FILENO);
    close(pipe_fd[0]);
    close(pipe_fd[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    const std::string msg = fmt::format("error: cannot run {}: {}\n", argv[0], std::strerror(errno));
    (void)!write(STDERR_FILENO, msg.data(), msg.size());
    _exit(127);
  }
  close(pipe_fd[1]);
  Finished done{0, {}};
  char buf[4096];
  ssize_t n;
  while ((n = read(pipe_fd[0], buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    done.err.append(buf, static_cast<size_t>(n));
  }
  close(pipe_fd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  done.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return done;
}

// The scripts report a problem as one "error: ..." line; a crash ends with the exception's line.
std::string failure_line(const std::string& err) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < err.size()) {
    size_t end = err.find('\n', start);
    if (end == std::string::npos) end = err.size();
    if (end > start) lines.push_back(err.substr(start, end - start));
    start = end + 1;
  }
  for (auto it = lines.rbegin(); it != lines.rend(); ++it)
    if (it->rfind("error: ", 0) == 0) return it->substr(7);
  return lines.empty() ? "" : lines.back();
}

void print_usage() {
  fmt::print("usage: kvlab plot <kind> [options]   (kvlab plot <kind> --help for its options)\n\n"
             "Figures (PNG, PDF and a JSON of the plotted numbers) from results or a plan file; they never\n"
             "re-run experiments. Each kind is plots/<script>.py run with {} (env KVLAB_PYTHON);\n"
             "scripts from {} (env KVLAB_PLOTS_DIR).\n\nkinds:\n",
             python(), plots_dir());
  for (const auto& k : plot_kinds()) fmt::print("  {:<11} {}\n", k.name, k.help);
}

}  // namespace

int plot(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    print_usage();
    return args.empty() ? 2 : 0;
  }
  const PlotKind* kind = nullptr;
  std::vector<std::string> names;
  for (const auto& k : plot_kinds()) {
    names.push_back(k.name);
    if (args[0] == k.name) kind = &k;
  }
  if (!kind) fail("unknown plot '{}'{} (kinds: {})", args[0], did_you_mean(args[0], names), join(names));

  const std::string script = plots_dir() + "/" + kind->script;
  if (!std::filesystem::is_regular_file(script))
    fail("plot script {} not found (set KVLAB_PLOTS_DIR to the project's plots/ folder)", script);
  const std::string py = python();
  if (access(py.c_str(), X_OK) != 0)
    fail("{} not found: the plots need Debian's python3 with python3-matplotlib (scripts/setup.sh), "
         "or set KVLAB_PYTHON", py);

  std::vector<std::string> argv = {py, script};
  argv.insert(argv.end(), args.begin() + 1, args.end());
  std::fflush(stdout);
  const Finished done = run_capturing_stderr(argv);
  if (done.status != 0) {
    const std::string line = failure_line(done.err);
    if (line.empty()) fail("{} {} exited with status {}", py, script, done.status);
    throw Error(line);
  }
  std::fputs(done.err.c_str(), stderr);  // notes (e.g. points averaged over differing cells)
  return 0;
}

}  // namespace kvlab::cli
