// Slurm as the engine for many machines: the scripts `kvlab slurm` writes, and (when Slurm is
// installed, as scripts/setup.sh does) a real one-node cluster on loopback (auth/none, its own
// ports, state and config in a temp dir) that runs a sweep as a 2-task array plus the merge job;
// the merged store must equal a local run of the same spec.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <thread>

#include "kvlab/results/results_store.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/slurm_script.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Runs a shell command; returns its exit code, and its stdout in *out.
int sh(const std::string& cmd, std::string* out = nullptr) {
  std::string o;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) o.append(buf, n);
  const int status = pclose(p);
  if (out) *out = o;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string find_program(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/usr/bin/", "/usr/local/sbin/", "/usr/local/bin/", "/sbin/", "/bin/"})
    if (access((std::string(dir) + name).c_str(), X_OK) == 0) return std::string(dir) + name;
  return "";
}

int free_port() {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  close(s);
  return port;
}

const char* kSpec = R"(name: slurmtest
models:
  - {name: tiny, make: {shape: tiny, seed: 5}}
tasks:
  - {name: ppl, params: {text: "${repo}/datasets/tiny/tokenizer_corpus.txt", ctx: 64, max_windows: 3}}
methods:
  - fp16
  - {name: kivi, params: {group: 16, residual: 32}}
  - {name: uniform, params: {group: 16}}
sweep:
  bits: [2, 4]
)";

TEST(SlurmScripts, ArrayMergeAndSubmitScripts) {
  test::TempDir dir;
  std::ofstream(dir / "t.yaml") << kSpec;
  const ExperimentSpec spec = ExperimentSpec::load(dir / "t.yaml");
  SlurmOptions o;
  o.array = 3;
  o.out_dir = dir / "slurm";
  o.kvlab_binary = KVLAB_BINARY;
  o.store = dir / "merged.sqlite";
  o.cache = dir / "cache";
  o.time = "01:00:00";
  o.extra = {"--account=lab"};
  const SlurmFiles f = write_slurm_scripts(spec, o);
  const std::string array = slurp(f.array_script), merge = slurp(f.merge_script);
  EXPECT_NE(array.find("#SBATCH --array=0-2\n"), std::string::npos) << array;
  EXPECT_NE(array.find("#SBATCH --time=01:00:00\n"), std::string::npos) << array;
  EXPECT_NE(array.find("#SBATCH --account=lab\n"), std::string::npos) << array;
  EXPECT_NE(array.find("--shard \"${SLURM_ARRAY_TASK_ID}/3\""), std::string::npos) << array;
  EXPECT_NE(array.find("/shards'/shard-\"${SLURM_ARRAY_TASK_ID}\".sqlite"), std::string::npos) << array;
  ASSERT_EQ(f.shard_stores.size(), 3u);
  for (const auto& s : f.shard_stores) EXPECT_NE(merge.find(s), std::string::npos) << merge;
  EXPECT_NE(merge.find("results merge"), std::string::npos);
  EXPECT_NE(slurp(f.submit_script).find("--dependency=afterok:$array"), std::string::npos);
  for (const auto& s : {f.array_script, f.merge_script, f.submit_script})
    EXPECT_EQ(sh("bash -n '" + s + "' 2>&1"), 0) << s;
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
}

// A folder name holding what a shell or sbatch treats specially: spaces, '$', a variable, backquotes,
// both quotes, command substitutions, '#', ';', '&', '*' and Slurm's '%a' log-name pattern. Were any
// of it interpreted, a file PWN or BQ would appear in the working folder or a path would change.
const char* kHostile = "we ird $HOME `touch BQ` 'sq' \"dq\" $(touch PWN) #c; & * 100%a";

void write_executable(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
}

// No file named PWN or BQ anywhere under root.
std::string injected_files(const std::string& root) {
  std::string found;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root))
    if (e.path().filename() == "PWN" || e.path().filename() == "BQ") found += e.path().string() + "\n";
  return found;
}

// The whole chain (kvlab slurm, then submit.sh, the array and the merge scripts) through a stub sbatch
// that runs each script with bash, and a stub kvlab that records the arguments it gets: every path
// must arrive exactly as given, and nothing in a path may run.
TEST(SlurmScripts, HostilePathsReachTheJobsIntactThroughAStubSbatch) {
  test::TempDir tmp;
  const std::string dir = tmp / kHostile;
  std::filesystem::create_directories(dir + "/run");
  std::filesystem::create_directories(tmp / "bin");
  const std::string spec_path = dir + "/t.yaml";
  std::ofstream(spec_path) << "store: \"results/$(touch PWN)/x.sqlite\"\n" << kSpec;
  const std::string store = dir + "/results/$(touch PWN)/x.sqlite";
  const std::string cache = dir + "/results/$(touch PWN)";
  const std::string out = dir + "/out $(touch PWN) `touch BQ` \"q\" 'q'";
  const std::string stub_kvlab = dir + "/kvlab $(touch PWN)";
  write_executable(stub_kvlab, "#!/bin/bash\n{ printf '[%s]' \"$@\"; echo; } >> \"$KVLAB_STUB_LOG\"\n");
  write_executable(tmp / "bin/sbatch",
                   "#!/bin/bash\n"
                   "script=\"${@: -1}\"\n"
                   "last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\)$/\\1/p' \"$script\")\n"
                   "if [[ -n $last ]]; then\n"
                   "  for i in $(seq 0 \"$last\"); do SLURM_ARRAY_TASK_ID=$i SLURM_CPUS_PER_TASK=1 bash \"$script\" || exit 1; done\n"
                   "  echo 7\n"
                   "else\n"
                   "  bash \"$script\" || exit 1\n"
                   "  echo 8\n"
                   "fi\n");
  const std::string log = tmp / "kvlab-calls.txt";
  std::string text;
  const std::string cmd = "cd " + shell_quote(dir + "/run") + " && export PATH=" + shell_quote(tmp / "bin") +
                          ":\"$PATH\" KVLAB_STUB_LOG=" + shell_quote(log) + " && " + KVLAB_BINARY + " slurm " +
                          shell_quote(spec_path) + " --array 2 --out " + shell_quote(out) + " --kvlab " +
                          shell_quote(stub_kvlab) + " && bash " + shell_quote(out + "/submit.sh");
  ASSERT_EQ(sh(cmd + " 2>&1", &text), 0) << text;
  EXPECT_EQ(injected_files(tmp.str()), "");
  EXPECT_NE(text.find("writes " + store), std::string::npos) << text;
  std::string expected;
  for (int i = 0; i < 2; ++i)
    expected += "[run][" + spec_path + "][--shard][" + std::to_string(i) + "/2][--store][" + out + "/shards/shard-" +
                std::to_string(i) + ".sqlite][--cache][" + cache + "][--skip-done-in][" + store +
                "][--threads][1][--no-table]\n";
  expected += "[results][merge][" + out + "/shards/shard-0.sqlite][" + out + "/shards/shard-1.sqlite][--out][" +
              store + "]\n";
  EXPECT_EQ(slurp(log), expected);
}

// A newline in any path or option would end a comment or an #SBATCH line and start a command:
// refused, naming the option, before anything is written.
TEST(SlurmScripts, ControlCharactersInPathsAndOptionsAreRefused) {
  test::TempDir tmp;
  std::ofstream(tmp / "t.yaml") << kSpec;
  const std::string base = std::string(KVLAB_BINARY) + " slurm " + shell_quote(tmp / "t.yaml") + " --array 2 --store " +
                           shell_quote(tmp / "s.sqlite");
  for (const auto& [option, value] : std::vector<std::pair<std::string, std::string>>{
           {"--out", tmp / "a\ntouch PWN\n#"},
           {"--partition", "x\ntouch PWN"},
           {"--sbatch", "--comment=x\ntouch PWN"},
           {"--cache", tmp / "c\rd"}}) {
    std::string text;
    EXPECT_NE(sh("cd " + shell_quote(tmp.str()) + " && " + base + " " + option + " " + shell_quote(value) + " 2>&1",
                 &text),
              0)
        << option;
    EXPECT_NE(text.find(option), std::string::npos) << text;
    EXPECT_NE(text.find("control character"), std::string::npos) << text;
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
    EXPECT_FALSE(std::filesystem::exists(tmp / "a\ntouch PWN\n#/submit.sh"));
  }
}

// A one-node Slurm cluster for one test: slurmctld and slurmd in the foreground (-D) as children
// of this process, stopped (and their jobs cancelled) by the destructor whatever happens.
class LocalSlurm {
 public:
  explicit LocalSlurm(const std::string& dir) : dir_(dir) {}
  ~LocalSlurm() { stop(); }

  // Returns "" when the node is up and idle, else what went wrong.
  std::string start() {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    std::string node = host;
    node = node.substr(0, node.find('.'));
    const unsigned cpus = std::max(2u, std::thread::hardware_concurrency());
    const std::string user = getenv("USER") ? getenv("USER") : "root";
    for (const char* d : {"state", "spool", "log"}) std::filesystem::create_directories(dir_ + "/" + d);
    conf_ = dir_ + "/slurm.conf";
    std::ofstream(conf_) << "ClusterName=kvlabtest\n"
                         << "SlurmctldHost=" << node << "(127.0.0.1)\n"
                         << "SlurmctldPort=" << free_port() << "\nSlurmdPort=" << free_port() << "\n"
                         << "AuthType=auth/none\nCredType=cred/none\n"
                         << "SlurmUser=" << user << "\nSlurmdUser=" << user << "\n"
                         << "StateSaveLocation=" << dir_ << "/state\nSlurmdSpoolDir=" << dir_ << "/spool\n"
                         << "SlurmctldPidFile=" << dir_ << "/slurmctld.pid\nSlurmdPidFile=" << dir_ << "/slurmd.pid\n"
                         << "SlurmctldLogFile=" << dir_ << "/log/slurmctld.log\nSlurmdLogFile=" << dir_
                         << "/log/slurmd.log\n"
                         << "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
                         << "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nSchedulerType=sched/builtin\n"
                         << "AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n"
                         << "JobCompType=jobcomp/none\nMpiDefault=none\nReturnToService=2\n"
                         << "NodeName=" << node << " NodeAddr=127.0.0.1 CPUs=" << cpus << " State=UNKNOWN\n"
                         << "PartitionName=kvlab Nodes=" << node << " Default=YES MaxTime=INFINITE State=UP\n";
    setenv("SLURM_CONF", conf_.c_str(), 1);
    ctld_ = spawn({find_program("slurmctld"), "-D", "-i"}, dir_ + "/log/slurmctld.out");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    slurmd_ = spawn({find_program("slurmd"), "-D"}, dir_ + "/log/slurmd.out");
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
      std::string state;
      if (sh("sinfo -h -o %t 2>/dev/null", &state) == 0 && state.rfind("idle", 0) == 0) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return "the node did not become idle; logs: " + logs();
  }

  std::string logs() const {
    std::string all;
    for (const char* f : {"/log/slurmctld.log", "/log/slurmd.log", "/log/slurmctld.out", "/log/slurmd.out"}) {
      std::string t = slurp(dir_ + f);
      if (t.size() > 1500) t = t.substr(t.size() - 1500);
      all += std::string("\n--- ") + f + "\n" + t;
    }
    return all;
  }

  void stop() {
    if (ctld_ > 0) sh("scancel --partition=kvlab >/dev/null 2>&1");
    for (pid_t* pid : {&slurmd_, &ctld_}) {
      if (*pid <= 0) continue;
      kill(*pid, SIGTERM);
      int status = 0;
      for (int i = 0; i < 100 && waitpid(*pid, &status, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (waitpid(*pid, &status, WNOHANG) == 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, &status, 0);
      }
      *pid = -1;
    }
    unsetenv("SLURM_CONF");
  }

 private:
  static pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> args;
      std::vector<std::string> copy = argv;
      for (auto& a : copy) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    return pid;
  }
  std::string dir_, conf_;
  pid_t ctld_ = -1, slurmd_ = -1;
};

TEST(Slurm, ArrayOfShardsThenMergeEqualsALocalRun) {
  for (const char* p : {"slurmctld", "slurmd", "sbatch", "sinfo", "scancel"})
    if (find_program(p).empty())
      GTEST_SKIP() << "Slurm is not installed (" << p << " missing); scripts/setup.sh installs slurm-wlm";
  if (geteuid() != 0) GTEST_SKIP() << "the one-node Slurm cluster needs root (slurmd starts jobs as their user)";

  // Every path lives in a folder named with what a shell or sbatch would interpret (kHostile).
  test::TempDir tmp;
  const std::string base = tmp / kHostile;
  std::filesystem::create_directories(base + "/run");
  auto dir = [&](const std::string& name) { return base + "/" + name; };
  auto q = [&](const std::string& name) { return shell_quote(dir(name)); };
  std::ofstream(dir("t.yaml")) << kSpec;
  const std::string kvlab = KVLAB_BINARY;
  std::string out;
  // An #SBATCH option with spaces, quotes, '#' and '$': sbatch must read it back as it was.
  const std::string comment = "kvlab test #1 'q' \"d\" $x \\";
  ASSERT_EQ(sh(kvlab + " slurm " + q("t.yaml") + " --array 2 --out " + q("slurm") + " --store " +
                   q("merged.sqlite") + " --cache " + q("cache") + " --sbatch " + shell_quote("--comment=" + comment) +
                   " 2>&1",
               &out),
            0)
      << out;
  EXPECT_NE(out.find("5 cells in 2 shards"), std::string::npos) << out;

  LocalSlurm cluster(tmp / "cluster");
  const std::string why = cluster.start();
  ASSERT_EQ(why, "");
  const int rc = sh("cd " + q("run") + " && timeout 600 bash " + q("slurm/submit.sh") + " --wait 2>&1", &out);
  ASSERT_EQ(rc, 0) << out << "\nshard 0: " << slurp(dir("slurm/logs/shard-0.out"))
                   << "\nshard 1: " << slurp(dir("slurm/logs/shard-1.out"))
                   << "\nmerge: " << slurp(dir("slurm/logs/merge.out")) << cluster.logs();
  const size_t job_at = out.find("submitted shard array job ");
  ASSERT_NE(job_at, std::string::npos) << out;
  const std::string job = out.substr(job_at + 26, out.find(' ', job_at + 26) - job_at - 26);
  std::string shown;
  sh("scontrol show job " + job + " 2>&1", &shown);
  // scontrol ends the line with a space: the comment must be whole, then the line's end.
  const size_t comment_at = shown.find("Comment=" + comment);
  ASSERT_NE(comment_at, std::string::npos) << shown;
  const size_t comment_end = comment_at + 8 + comment.size();
  EXPECT_EQ(shown.find_first_not_of(' ', comment_end), shown.find('\n', comment_end)) << shown;
  cluster.stop();
  EXPECT_EQ(injected_files(tmp.str()), "");
  // The logs went where the scripts said, '%a' in the folder's name taken literally.
  for (const char* f : {"slurm/logs/shard-0.out", "slurm/logs/shard-1.out", "slurm/logs/merge.out"})
    EXPECT_TRUE(std::filesystem::exists(dir(f))) << f;

  // Each shard wrote its own slice; together they are the grid.
  const auto s0 = ResultsStore(dir("slurm/shards/shard-0.sqlite"), ResultsStore::Mode::ReadOnly).cell_ids();
  const auto s1 = ResultsStore(dir("slurm/shards/shard-1.sqlite"), ResultsStore::Mode::ReadOnly).cell_ids();
  EXPECT_EQ(s0.size(), 3u);
  EXPECT_EQ(s1.size(), 2u);
  for (const auto& id : s0) EXPECT_EQ(s1.count(id), 0u);

  ASSERT_EQ(sh(kvlab + " run " + q("t.yaml") + " --store " + q("local.sqlite") + " --cache " + q("cache") +
                   " --threads 1 --quiet --no-table 2>&1",
               &out),
            0)
      << out;
  ResultsStore merged(dir("merged.sqlite"), ResultsStore::Mode::ReadOnly), local(dir("local.sqlite"), ResultsStore::Mode::ReadOnly);
  EXPECT_EQ(merged.cell_ids(), local.cell_ids());
  for (const auto& c : local.cells()) {
    const auto m = merged.find(c.cell_id);
    ASSERT_TRUE(m) << c.slug;
    EXPECT_EQ(m->config, c.config);
    for (const auto& [name, value] : c.metrics)
      EXPECT_NEAR(m->metrics.at(name), value, 1e-9 * std::max(1.0, std::abs(value))) << c.slug << " " << name;
  }
}

}  // namespace
}  // namespace kvlab
