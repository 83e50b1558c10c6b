// `kvlab run` as a user meets it: a sweep killed with SIGKILL at an arbitrary moment and run again
// gives the same store as an uninterrupted run (same cell ids, same numbers, no duplicate or partial
// cell), and so does one killed while it calibrates; a `kvlab results merge` killed at any moment
// leaves whole stores; two runs on one store compute each cell once and say so; --dry-run prints
// the grid; errors are one line naming file:line; results show / export / merge work on the stores
// the runs wrote.
#include <gtest/gtest.h>
#include <signal.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "cli_run.h"
#include "kvlab/common/error.h"
#include "kvlab/results/results_store.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

struct CliRun {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Starts `kvlab args...` with stdout/stderr into files; returns its pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& out, const std::string& err) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fo = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int fe = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fo, 1);
    dup2(fe, 2);
    std::vector<char*> argv;
    static std::string bin = KVLAB_BINARY;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

CliRun run_kvlab(const std::vector<std::string>& args, const test::TempDir& dir) {
  const pid_t pid = spawn(args, dir / "stdout.txt", dir / "stderr.txt");
  int status = 0;
  waitpid(pid, &status, 0);
  CliRun r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(dir / "stdout.txt");
  r.err = slurp(dir / "stderr.txt");
  return r;
}

int64_t stored_cells(const std::string& store) {
  try {
    if (!std::filesystem::exists(store)) return 0;
    return ResultsStore(store, ResultsStore::Mode::ReadOnly).count();
  } catch (const std::exception&) {
    return 0;  // being created
  }
}

std::string integrity(const std::string& store) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(store.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, nullptr);
  sqlite3_step(s);
  const std::string r = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(db);
  return r;
}

// An 8-cell sweep on a random tiny model that the runner generates itself (`make:`), over a text
// long enough that each cell takes a moment.
std::string write_sweep(const test::TempDir& dir) {
  std::string corpus = slurp(KVLAB_SOURCE_DIR "/datasets/tiny/tokenizer_corpus.txt"), text;
  for (int i = 0; i < 6; ++i) text += corpus;
  std::ofstream(dir / "text.txt") << text;
  std::ofstream(dir / "t.yaml") << R"(name: killme
description: an 8-cell sweep for the kill-and-resume test
models:
  - {name: tiny, make: {shape: tiny, seed: 3}}
tasks:
  - {name: ppl, params: {text: text.txt, ctx: 256, max_windows: 6}}
methods:
  - fp16
  - {name: kivi, params: {group: 16}, sweep: {bits: [2, 4], residual: [32, 64]}}
  - {name: uniform, params: {group: 16}}
sweep:
  bits: [2, 4, 8]
)";
  return dir / "t.yaml";
}

TEST(RunCli, KilledMidSweepAndRunAgainEqualsAnUninterruptedRun) {
  test::TempDir dir;
  const std::string spec = write_sweep(dir), cache = dir / "cache", ref_store = dir / "ref.sqlite";
  const std::vector<std::string> common = {"--cache", cache, "--threads", "1", "--quiet"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), common.begin(), common.end());
    return a;
  };

  // The dry run: the grid and its shards, nothing written.
  CliRun r = run_kvlab({"run", spec, "--dry-run", "--store", ref_store}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("8 cells (10 grid points repeat an earlier cell's config); 0 done, 8 to run"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("todo    tiny/ppl/kivi bits=4,group=16,residual=64"), std::string::npos) << r.out;
  r = run_kvlab({"run", spec, "--dry-run", "--shard", "1/3", "--store", ref_store}, dir);
  EXPECT_NE(r.out.find("shard 1/3: 3 cells; 0 done, 3 to run"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(ref_store));

  // The uninterrupted run: the reference.
  const CliRun ref = run_kvlab(with({"run", spec, "--store", ref_store}), dir);
  ASSERT_EQ(ref.code, 0) << ref.err;
  EXPECT_EQ(stored_cells(ref_store), 8);
  EXPECT_NE(ref.out.find("8 cells: 8 ran now"), std::string::npos) << ref.out;
  EXPECT_NE(ref.out.find("tiny/ppl/kivi bits=4,group=16,residual=64"), std::string::npos) << ref.out;  // the table
  // The progress line: cells done of total, rate, ETA, the current cell.
  EXPECT_NE(ref.err.find("run killme  3/8 cells"), std::string::npos) << ref.err;
  EXPECT_NE(ref.err.find("cells/s"), std::string::npos);
  EXPECT_NE(ref.err.find("ETA"), std::string::npos);
  EXPECT_NE(ref.err.find("now: tiny/ppl/uniform bits=8,group=16"), std::string::npos) << ref.err;

  // The killed run: wait for the first committed cell, then SIGKILL at once (the next cell is in
  // flight).
  const std::string store = dir / "killed.sqlite";
  const pid_t pid = spawn(with({"run", spec, "--store", store}), dir / "o.txt", dir / "e.txt");
  const auto start = std::chrono::steady_clock::now();
  while (stored_cells(store) < 1 && std::chrono::steady_clock::now() - start < std::chrono::seconds(300))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it could be killed: " << slurp(dir / "e.txt");
  const int64_t survived = stored_cells(store);
  ASSERT_GE(survived, 1);
  ASSERT_LT(survived, 8) << "every cell finished before the kill; the test needs slower cells";

  // What survived is whole: an intact database, every stored cell with all six metrics.
  EXPECT_EQ(integrity(store), "ok");
  for (const auto& c : ResultsStore(store, ResultsStore::Mode::ReadOnly).cells()) EXPECT_EQ(c.metrics.size(), 6u);

  const CliRun again = run_kvlab(with({"run", spec, "--store", store}), dir);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find(fmt::format("{} already in", survived)), std::string::npos) << again.err;
  EXPECT_NE(again.out.find(fmt::format("{} ran now", 8 - survived)), std::string::npos) << again.out;

  // The resumed store equals the uninterrupted one: same ids, same numbers, nothing twice.
  ResultsStore want(ref_store, ResultsStore::Mode::ReadOnly), got(store, ResultsStore::Mode::ReadOnly);
  EXPECT_EQ(got.cell_ids(), want.cell_ids());
  for (const auto& c : want.cells()) {
    const auto g = got.find(c.cell_id);
    ASSERT_TRUE(g) << c.slug;
    EXPECT_EQ(g->config, c.config);
    ASSERT_EQ(g->metrics.size(), c.metrics.size()) << c.slug;
    for (const auto& [name, value] : c.metrics)
      EXPECT_NEAR(g->metrics.at(name), value, 1e-9 * std::max(1.0, std::abs(value))) << c.slug << " " << name;
    EXPECT_EQ(g->cache_bytes, c.cache_bytes);
  }
  EXPECT_EQ(integrity(store), "ok");
  // The dry run now sees every cell done.
  r = run_kvlab({"run", spec, "--dry-run", "--store", store, "--cache", cache}, dir);
  EXPECT_NE(r.out.find("8 done, 0 to run"), std::string::npos) << r.out;
}

// "N cells: R ran now, D already done[, E ran by another run meanwhile], F failed" -> {N, R, D, E, F}.
std::vector<int64_t> run_report(const std::string& out) {
  static const std::regex re(
      R"((\d+) cells: (\d+) ran now, (\d+) already done(?:, (\d+) ran by another run meanwhile)?, (\d+) failed)");
  std::smatch m;
  if (!std::regex_search(out, m, re)) return {};
  std::vector<int64_t> v;
  for (int i = 1; i <= 5; ++i) v.push_back(m[i].matched ? std::stoll(m[i].str()) : 0);
  return v;
}

int64_t count_of(const std::string& text, const std::string& needle) {
  int64_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(RunCli, TwoRunsOnOneStoreComputeEachCellOnceAndSaySo) {
  test::TempDir dir;
  const std::string spec = write_sweep(dir), store = dir / "shared.sqlite", cache = dir / "cache";
  const std::vector<std::string> args = {"run", spec, "--store", store, "--cache", cache, "--threads", "1", "--quiet",
                                         "--no-table"};
  // The second run starts while the first is in the middle of the sweep.
  const pid_t first = spawn(args, dir / "o1.txt", dir / "e1.txt");
  const auto start = std::chrono::steady_clock::now();
  while (stored_cells(store) < 1 && std::chrono::steady_clock::now() - start < std::chrono::seconds(300))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const pid_t second = spawn(args, dir / "o2.txt", dir / "e2.txt");
  int s1 = 0, s2 = 0;
  waitpid(first, &s1, 0);
  waitpid(second, &s2, 0);
  const std::string out1 = slurp(dir / "o1.txt"), out2 = slurp(dir / "o2.txt");
  const std::string err1 = slurp(dir / "e1.txt"), err2 = slurp(dir / "e2.txt");
  ASSERT_TRUE(WIFEXITED(s1) && WEXITSTATUS(s1) == 0) << err1;
  ASSERT_TRUE(WIFEXITED(s2) && WEXITSTATUS(s2) == 0) << err2;

  // Every cell was computed once over both runs: the runner prints "now: <cell>" as it starts one.
  EXPECT_EQ(count_of(err1, "now: ") + count_of(err2, "now: "), 8) << err1 << "\n----\n" << err2;
  for (const auto& c : ResultsStore(store, ResultsStore::Mode::ReadOnly).cells())
    EXPECT_EQ(count_of(err1, "now: " + c.slug + " [") + count_of(err2, "now: " + c.slug + " ["), 1) << c.slug;
  // And each report is true: what ran here, what was there before, what the other run stored.
  const auto r1 = run_report(out1), r2 = run_report(out2);
  ASSERT_EQ(r1.size(), 5u) << out1;
  ASSERT_EQ(r2.size(), 5u) << out2;
  EXPECT_EQ(r1[1] + r2[1], 8) << out1 << out2;
  EXPECT_EQ(r1[2], 0) << out1;
  EXPECT_GE(r2[2], 1) << out2;  // it started after the first cell was stored
  for (const auto& r : {r1, r2}) {
    EXPECT_EQ(r[0], 8);
    EXPECT_EQ(r[1] + r[2] + r[3], 8);
    EXPECT_EQ(r[4], 0);
  }
  EXPECT_EQ(r1[1], count_of(err1, "now: "));
  EXPECT_EQ(r2[1], count_of(err2, "now: "));
  EXPECT_EQ(stored_cells(store), 8);
  EXPECT_EQ(integrity(store), "ok");
}

// kvmix's calibration (a profile over the text) is cached as a plan folder; a run killed while it
// calibrates leaves no plan folder that looks done, and the next run calibrates again and gives the
// same store as an uninterrupted run.
TEST(RunCli, KilledWhileCalibratingLeavesNoHalfWrittenPlan) {
  test::TempDir dir;
  std::string corpus = slurp(KVLAB_SOURCE_DIR "/datasets/tiny/tokenizer_corpus.txt"), text;
  for (int i = 0; i < 6; ++i) text += corpus;
  std::ofstream(dir / "text.txt") << text;
  std::ofstream(dir / "cal.yaml") << R"(name: killcal
models:
  - {name: tiny, make: {shape: tiny, seed: 3}}
tasks:
  - {name: ppl, params: {text: text.txt, ctx: 128, max_windows: 2}}
methods:
  - {name: kvmix, params: {group: 16}, calibration: {calib: text.txt, samples: 48, max_len: 256}}
)";
  const std::string spec = dir / "cal.yaml";
  auto args = [&](const std::string& store, const std::string& cache) {
    return std::vector<std::string>{"run", spec, "--store", store, "--cache", cache, "--threads", "1", "--quiet"};
  };
  const CliRun ref = run_kvlab(args(dir / "ref.sqlite", dir / "ref_cache"), dir);
  ASSERT_EQ(ref.code, 0) << ref.err;

  const std::string cache = dir / "cache", plans = cache + "/plans";
  auto staging_present = [&] {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(plans, ec))
      if (e.path().filename().string().find(".staging-") != std::string::npos) return true;
    return false;
  };
  const pid_t pid = spawn(args(dir / "killed.sqlite", cache), dir / "o.txt", dir / "e.txt");
  const auto start = std::chrono::steady_clock::now();
  while (!staging_present() && std::chrono::steady_clock::now() - start < std::chrono::seconds(300))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // into the profile
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it could be killed: " << slurp(dir / "e.txt");
  ASSERT_TRUE(staging_present()) << "killed outside the calibration";
  // No finished-looking plan folder: only the dead run's staging folder (and its lock file).
  for (const auto& e : std::filesystem::directory_iterator(plans)) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE(name[0] == '.') << "a plan folder appeared before its calibration finished: " << name;
  }
  EXPECT_EQ(stored_cells(dir / "killed.sqlite"), 0);

  const CliRun again = run_kvlab(args(dir / "killed.sqlite", cache), dir);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_FALSE(staging_present()) << "the dead run's staging folder was left behind";
  ResultsStore want(dir / "ref.sqlite", ResultsStore::Mode::ReadOnly), got(dir / "killed.sqlite", ResultsStore::Mode::ReadOnly);
  ASSERT_EQ(got.cell_ids(), want.cell_ids());
  for (const auto& c : want.cells()) {
    const auto g = got.find(c.cell_id);
    ASSERT_TRUE(g);
    for (const auto& [name, value] : c.metrics)
      EXPECT_NEAR(g->metrics.at(name), value, 1e-9 * std::max(1.0, std::abs(value))) << name;
  }
}

// A store of n cells (two metrics each) written in one transaction.
void write_big_store(const std::string& path, int n, const std::string& prefix) {
  ResultsStore(path).count();  // the schema
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  sqlite3_stmt *cell = nullptr, *metric = nullptr;
  sqlite3_prepare_v2(db,
                     "INSERT INTO cells(cell_id, experiment, slug, model, task, method, config_json, bits_k, bits_v, "
                     "cache_bytes, memory_ratio, seconds, device, git_rev, finished_at) "
                     "VALUES(?, 'e', ?, 'm', 'ppl', 'kivi', ?, 2, 2, 100, 0.25, 1, 'cpu', 'x', 'now')",
                     -1, &cell, nullptr);
  sqlite3_prepare_v2(db, "INSERT INTO metrics(cell_id, name, value) VALUES(?, ?, ?)", -1, &metric, nullptr);
  for (int i = 0; i < n; ++i) {
    const std::string id = fmt::format("{}{:06d}", prefix, i), slug = "m/ppl/kivi residual=" + std::to_string(i);
    const std::string config = fmt::format(R"({{"method":{{"name":"kivi","params":{{"residual":{}}}}},"seed":0}})", i);
    sqlite3_bind_text(cell, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(cell, 2, slug.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(cell, 3, config.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_step(cell);
    sqlite3_reset(cell);
    for (const char* name : {"ppl", "kl_mean"}) {
      sqlite3_bind_text(metric, 1, id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(metric, 2, name, -1, SQLITE_STATIC);
      sqlite3_bind_double(metric, 3, 10.0 + i);
      sqlite3_step(metric);
      sqlite3_reset(metric);
    }
  }
  sqlite3_finalize(cell);
  sqlite3_finalize(metric);
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(db);
}

// `kvlab results merge` killed with SIGKILL at moments spread over its run: the output store is
// always intact and holds either what it held before or the whole merge, each cell with all its
// metrics.
TEST(RunCli, MergeKilledAtAnyMomentLeavesWholeStores) {
  test::TempDir dir;
  constexpr int kIncoming = 5000, kBefore = 3;
  write_big_store(dir / "big.sqlite", kIncoming, "b");
  write_big_store(dir / "before.sqlite", kBefore, "a");
  // The uninterrupted merge, timed, to spread the kills over it.
  std::filesystem::copy_file(dir / "before.sqlite", dir / "full.sqlite");
  const auto t0 = std::chrono::steady_clock::now();
  CliRun r = run_kvlab({"results", "merge", dir / "big.sqlite", "--out", dir / "full.sqlite"}, dir);
  const double full_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(stored_cells(dir / "full.sqlite"), kBefore + kIncoming);

  int killed_midway = 0;
  for (int k = 0; k < 8; ++k) {
    const std::string out = dir / fmt::format("out{}.sqlite", k);
    std::filesystem::copy_file(dir / "before.sqlite", out);
    const pid_t pid = spawn({"results", "merge", dir / "big.sqlite", "--out", out}, dir / "o.txt", dir / "e.txt");
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(full_ms * 1000 * k / 7)));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) ++killed_midway;
    EXPECT_EQ(integrity(out), "ok") << "kill " << k;
    const int64_t n = stored_cells(out);
    EXPECT_TRUE(n == kBefore || n == kBefore + kIncoming) << "kill " << k << ": " << n << " cells";
    sqlite3* db = nullptr;
    sqlite3_open_v2(out.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM cells WHERE (SELECT COUNT(*) FROM metrics m WHERE m.cell_id = cells.cell_id) != 2",
                       -1, &s, nullptr);
    sqlite3_step(s);
    EXPECT_EQ(sqlite3_column_int64(s, 0), 0) << "kill " << k << ": a cell without its metrics";
    sqlite3_finalize(s);
    sqlite3_close(db);
    // The merge run again completes it.
    r = run_kvlab({"results", "merge", dir / "big.sqlite", "--out", out}, dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(stored_cells(out), kBefore + kIncoming);
  }
  EXPECT_GE(killed_midway, 4) << "the merge finished before most kills; the test needs a bigger store";
}

void expect_one_line_error(const CliRun& r, const std::vector<std::string>& needles) {
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << n << " not in: " << r.err;
}

CellRecord stored_cell(const std::string& id, const std::string& method, int residual, double ppl) {
  CellRecord c;
  c.cell_id = id;
  c.experiment = "e";
  c.slug = "m/ppl/" + method + " residual=" + std::to_string(residual);
  c.model = "m";
  c.task = "ppl";
  c.method = method;
  c.config = {{"method", {{"name", method}, {"params", {{"residual", residual}}}}}, {"seed", 0}};
  c.metrics = {{"ppl", ppl}, {"kl_mean", ppl / 1000}};
  return c;
}

TEST(RunCli, ResultsCommandsAndOneLineErrors) {
  test::TempDir dir;
  {
    ResultsStore s(dir / "a.sqlite");
    s.insert(stored_cell("a1", "kivi", 32, 10));
    s.insert(stored_cell("a2", "kivi", 64, 9));
    s.insert(stored_cell("a3", "uniform", 0, 12));
  }
  CliRun r = run_kvlab({"results", "show", dir / "a.sqlite", "--where", "method=kivi", "--where", "residual=64",
                        "--metric", "ppl"}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("1 of 3 cells"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("m/ppl/kivi residual=64"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("kl_mean"), std::string::npos) << r.out;
  r = run_kvlab({"results", "export", "--store", dir / "a.sqlite", "--csv", dir / "r.csv", "--jsonl", dir / "r.jsonl"}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string jsonl = slurp(dir / "r.jsonl"), csv = slurp(dir / "r.csv");
  EXPECT_EQ(std::count(jsonl.begin(), jsonl.end(), '\n'), 3);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  // Merging the same store twice gives the same store.
  r = run_kvlab({"results", "merge", dir / "a.sqlite", dir / "a.sqlite", "--out", dir / "m.sqlite"}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(stored_cells(dir / "m.sqlite"), 3);

  // A conflicting cell is an error naming it, and the output keeps what it had.
  {
    ResultsStore s(dir / "b.sqlite");
    s.insert(stored_cell("b1", "kivi", 128, 8));
    s.insert(stored_cell("a2", "kivi", 64, 9.5));
  }
  expect_one_line_error(run_kvlab({"results", "merge", dir / "b.sqlite", "--out", dir / "m.sqlite"}, dir), {"a2"});
  EXPECT_EQ(stored_cells(dir / "m.sqlite"), 3);
  expect_one_line_error(run_kvlab({"results", "show", dir / "none.sqlite"}, dir), {"none.sqlite"});
  expect_one_line_error(run_kvlab({"results", "show", dir / "a.sqlite", "--where", "metod=kivi"}, dir),
                        {"metod", "did you mean 'method'"});

  std::ofstream(dir / "bad.yaml") << "name: bad\nmodels: [{name: m, make: {shape: tiny}}]\ntasks: [{name: ppl, "
                                      "params: {text: x.txt}}]\nmethods:\n  - {name: kivi, params: {residual: 20, group: 8}}\n";
  std::ofstream(dir / "x.txt") << "some text";
  expect_one_line_error(run_kvlab({"run", dir / "bad.yaml", "--dry-run"}, dir), {"bad.yaml:5", "multiple of the group"});
  expect_one_line_error(run_kvlab({"run", dir / "missing.yaml"}, dir), {"missing.yaml"});
  expect_one_line_error(run_kvlab({"run", dir / "bad.yaml", "--shard", "2/2"}, dir), {"2/2"});
}

// Two specs on one store share a cell (the same config): `results export SPEC --grid` gives exactly
// the second spec's grid, the shared cell included although the first spec's run stored it, where
// `--where experiment=` sees only the cells that spec's run computed itself.
TEST(RunCli, ExportOfASpecsGridIncludesCellsAnotherSpecStored) {
  test::TempDir dir;
  std::ofstream(dir / "text.txt") << slurp(KVLAB_SOURCE_DIR "/datasets/tiny/tokenizer_corpus.txt");
  const std::string head = "models:\n  - {name: tiny, make: {shape: tiny, seed: 3}}\n"
                           "tasks:\n  - {name: ppl, params: {text: text.txt, ctx: 64, max_windows: 1}}\n"
                           "store: shared.sqlite\nmethods:\n";
  std::ofstream(dir / "a.yaml") << "name: first\n" << head << "  - fp16\n  - {name: kivi, params: {bits: 2, group: 16, residual: 16}}\n";
  std::ofstream(dir / "b.yaml") << "name: second\n" << head
                                << "  - {name: kivi, params: {bits: 2, group: 16, residual: 16}}\n"
                                   "  - {name: uniform, params: {bits: 4, group: 16}}\n";
  for (const char* spec : {"a.yaml", "b.yaml"}) ASSERT_EQ(run_kvlab({"run", dir / spec, "--quiet"}, dir).code, 0) << spec;
  EXPECT_EQ(stored_cells(dir / "shared.sqlite"), 3);
  auto rows = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"results", "export", dir / "b.yaml", "--csv", dir / "b.csv"};
    args.insert(args.end(), extra.begin(), extra.end());
    const CliRun r = run_kvlab(args, dir);
    EXPECT_EQ(r.code, 0) << r.err;
    std::set<std::string> ids;
    std::istringstream in(slurp(dir / "b.csv"));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) ids.insert(line.substr(0, line.find(',')));
    return ids.size();
  };
  EXPECT_EQ(rows({}), 3u) << "the whole store";
  EXPECT_EQ(rows({"--grid"}), 2u) << "b's grid: kivi (stored by a's run) and uniform";
  EXPECT_EQ(rows({"--where", "experiment=second"}), 1u);
  expect_one_line_error(run_kvlab({"results", "show", dir / "shared.sqlite", "--grid"}, dir), {"--grid", "SPEC.yaml"});
}

// A merge that meets a conflict writes nothing at all: a new --out is not created (no file, no
// -wal/-shm, no temporary left), an existing one keeps exactly its cells, even when an input before
// the conflicting one had new cells.
TEST(RunCli, MergeWithAConflictWritesNothing) {
  test::TempDir dir;
  {
    ResultsStore a(dir / "a.sqlite"), b(dir / "b.sqlite"), c(dir / "c.sqlite"), m(dir / "m.sqlite");
    a.insert(stored_cell("a1", "kivi", 32, 10));
    a.insert(stored_cell("a2", "kivi", 64, 9));
    b.insert(stored_cell("b1", "kivi", 128, 8));
    b.insert(stored_cell("a2", "kivi", 64, 9.5));  // a2 again, with another result
    c.insert(stored_cell("c1", "uniform", 0, 12));
    m.insert(stored_cell("m1", "uniform", 8, 11));
  }
  // Files of the output (new.sqlite, its -wal/-shm, a temporary .new.sqlite.*) in the folder.
  auto output_files = [&] {
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir.str())) {
      const std::string name = e.path().filename().string();
      if (name.find("new.sqlite") != std::string::npos) names.insert(name);
    }
    return names;
  };
  expect_one_line_error(run_kvlab({"results", "merge", dir / "a.sqlite", dir / "b.sqlite", "--out", dir / "new.sqlite"}, dir),
                        {"a2", "b.sqlite"});
  EXPECT_EQ(output_files(), std::set<std::string>{});

  expect_one_line_error(run_kvlab({"results", "merge", dir / "c.sqlite", dir / "a.sqlite", dir / "b.sqlite", "--out",
                                   dir / "m.sqlite"}, dir),
                        {"a2", "b.sqlite"});
  EXPECT_EQ(ResultsStore(dir / "m.sqlite", ResultsStore::Mode::ReadOnly).cell_ids(), (std::set<std::string>{"m1"}));

  // Without the conflict the same merges write everything.
  CliRun r = run_kvlab({"results", "merge", dir / "c.sqlite", dir / "a.sqlite", "--out", dir / "m.sqlite"}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(ResultsStore(dir / "m.sqlite", ResultsStore::Mode::ReadOnly).cell_ids(),
            (std::set<std::string>{"m1", "c1", "a1", "a2"}));
  r = run_kvlab({"results", "merge", dir / "a.sqlite", dir / "c.sqlite", "--out", dir / "new.sqlite"}, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(ResultsStore(dir / "new.sqlite", ResultsStore::Mode::ReadOnly).cell_ids(),
            (std::set<std::string>{"c1", "a1", "a2"}));
}

// A store this user cannot write (its permissions here; a read-only disk behaves the same) is
// named as read-only, not as "not a kvlab results store", and is left as it was; it can still be
// read. Root writes anything, so as root the commands run as user nobody.
TEST(RunCli, AReadOnlyStoreIsNamedAsSuch) {
  test::TempDir dir;
  {
    ResultsStore r(dir / "r.sqlite"), b(dir / "b.sqlite");
    r.insert(stored_cell("r1", "kivi", 32, 10));
    r.insert(stored_cell("r2", "kivi", 64, 9));
    b.insert(stored_cell("b1", "uniform", 0, 12));
  }
  const std::string store = dir / "r.sqlite";
  std::string as_user;
  if (geteuid() == 0) {
    if (access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv (util-linux) is needed to drop root";
    as_user = "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups ";
  } else {
    std::filesystem::permissions(store, std::filesystem::perms::owner_read);
    std::filesystem::permissions(dir.str(), std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  }
  auto run = [&](const std::string& args) {
    return test::run_command(as_user + KVLAB_BINARY + " " + args, dir / "stderr.txt");
  };
  test::CliRun r = run("results merge " + dir / "b.sqlite" + " --out " + store);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(store + ": the results store is read-only here"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run("results show " + store);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 of 2 cells"), std::string::npos) << r.out << r.err;
  std::filesystem::permissions(dir.str(), std::filesystem::perms::owner_all);
  std::filesystem::permissions(store, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(ResultsStore(store, ResultsStore::Mode::ReadOnly).cell_ids(), (std::set<std::string>{"r1", "r2"}));
}

// A 10^6-cell grid: `run --dry-run` answers at once with one line naming the count and its factors
// (it used to expand the grid for minutes and die with bad_alloc).
TEST(RunCli, AMillionCellDryRunIsRefusedAtOnce) {
  test::TempDir dir;
  std::string seeds = "[", windows = "[";
  for (int i = 0; i < 1000; ++i) seeds += (i ? ", " : "") + std::to_string(i), windows += (i ? ", " : "") + std::to_string(i + 1);
  std::ofstream(dir / "big.yaml") << "name: big\nmodels:\n  - {name: tiny, make: {shape: tiny}}\ntasks:\n"
                                  << "  - {name: ppl, params: {text: big.yaml, ctx: 64}, sweep: {max_windows: " << windows
                                  << "]}}\nmethods: [fp16]\nsweep:\n  seed: " << seeds << "]\n";
  expect_one_line_error(run_kvlab({"run", dir / "big.yaml", "--dry-run"}, dir),
                        {"big.yaml: the grid has 1000000 cells, more than the limit of 100000", "sweep 'seed' (1000 values)",
                         "'max_windows' (1000 values)"});
  expect_one_line_error(run_kvlab({"slurm", dir / "big.yaml", "--array", "4"}, dir), {"1000000 cells"});
}

}  // namespace
}  // namespace kvlab
