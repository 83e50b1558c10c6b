// The findings of issue 19 as a user meets them on the command line: a config.json with a billion
// (or a trillion) layers, a FIFO given as config.json, as the weights, as an experiment spec or as a
// text file. Each is one error line naming the file or key and the limit, at once (before: 40-70 s
// then "std::bad_alloc", or a process blocked forever).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

namespace fs = std::filesystem;
using test::CliRun;

const std::string kText = std::string(KVLAB_SOURCE_DIR) + "/datasets/tiny/tokenizer_corpus.txt";

// kvlab under `timeout`, so that a reader blocked on a FIFO fails the test instead of hanging it.
CliRun kvlab(const std::string& args, const test::TempDir& tmp) {
  return test::run_command("timeout 60 " + std::string(KVLAB_BINARY) + " " + args, tmp / "stderr.txt");
}

// A copy of a small real checkpoint whose config.json can be edited.
std::string copy_checkpoint(const test::TempDir& tmp, const std::string& name) {
  const std::string dir = tmp / name;
  fs::copy(std::string(KVLAB_TEST_DATA) + "/hf_reference/llama_mha", dir, fs::copy_options::recursive);
  return dir;
}

void set_config(const std::string& dir, const std::string& key, int64_t value) {
  nlohmann::json j;
  {
    std::ifstream in(dir + "/config.json");
    in >> j;
  }
  j[key] = value;
  std::ofstream(dir + "/config.json") << j.dump(2);
}

void expect_fast_one_line_error(const CliRun& r, const std::vector<std::string>& needles,
                                std::chrono::steady_clock::duration took) {
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.code, 124) << "timed out: the command blocked";
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << n << " not in: " << r.err;
  EXPECT_LT(took, std::chrono::seconds(30)) << r.err;
}

TEST(HardeningCli, ConfigWithABillionOrATrillionLayersIsOneLineAtOnce) {
  test::TempDir tmp;
  for (int64_t layers : {int64_t{1'000'000'000}, int64_t{1'000'000'000'000}}) {
    const std::string dir = copy_checkpoint(tmp, "m" + std::to_string(layers));
    set_config(dir, "num_hidden_layers", layers);
    const auto start = std::chrono::steady_clock::now();
    const CliRun r = kvlab("eval ppl --model " + dir + " --text " + kText + " --ctx 32 --max-windows 1", tmp);
    expect_fast_one_line_error(r, {dir + "/config.json", fmt::format("'num_hidden_layers' is {}, above the limit of 4096", layers)},
                               std::chrono::steady_clock::now() - start);
    EXPECT_EQ(r.err.find("bad_alloc"), std::string::npos) << r.err;
  }
  // Within the cap but more layers than the weights hold: named against the weights, before any
  // per-layer work.
  const std::string dir = copy_checkpoint(tmp, "m8");
  set_config(dir, "num_hidden_layers", 4000);
  const auto start = std::chrono::steady_clock::now();
  expect_fast_one_line_error(kvlab("eval ppl --model " + dir + " --text " + kText + " --ctx 32", tmp),
                             {"config.json has num_hidden_layers 4000 but the weights hold 2 layers"},
                             std::chrono::steady_clock::now() - start);
}

TEST(HardeningCli, HugeDimensionsAreRefusedNamingTheKey) {
  test::TempDir tmp;
  const std::string dir = copy_checkpoint(tmp, "m");
  set_config(dir, "hidden_size", int64_t{1} << 61);
  const auto start = std::chrono::steady_clock::now();
  expect_fast_one_line_error(kvlab("eval ppl --model " + dir + " --text " + kText, tmp),
                             {"'hidden_size' is 2305843009213693952, above the limit of 1048576"},
                             std::chrono::steady_clock::now() - start);
}

TEST(HardeningCli, FifoAsConfigWeightsSpecOrTextIsRefusedByName) {
  test::TempDir tmp;
  auto start = std::chrono::steady_clock::now();
  // config.json
  std::string dir = copy_checkpoint(tmp, "fifo_config");
  fs::remove(dir + "/config.json");
  ASSERT_EQ(::mkfifo((dir + "/config.json").c_str(), 0600), 0);
  expect_fast_one_line_error(kvlab("eval ppl --model " + dir + " --text " + kText, tmp),
                             {dir + "/config.json: model config is a FIFO (named pipe), not a regular file"},
                             std::chrono::steady_clock::now() - start);
  // model.safetensors
  dir = copy_checkpoint(tmp, "fifo_weights");
  fs::remove(dir + "/model.safetensors");
  ASSERT_EQ(::mkfifo((dir + "/model.safetensors").c_str(), 0600), 0);
  start = std::chrono::steady_clock::now();
  expect_fast_one_line_error(kvlab("eval ppl --model " + dir + " --text " + kText, tmp),
                             {dir + "/model.safetensors: safetensors file is a FIFO"},
                             std::chrono::steady_clock::now() - start);
  // the text to evaluate, and a directory in its place
  dir = copy_checkpoint(tmp, "ok");
  ASSERT_EQ(::mkfifo((tmp / "text.txt").c_str(), 0600), 0);
  start = std::chrono::steady_clock::now();
  expect_fast_one_line_error(kvlab("eval ppl --model " + dir + " --text " + tmp / "text.txt", tmp),
                             {tmp / "text.txt" + ": text file is a FIFO"}, std::chrono::steady_clock::now() - start);
  start = std::chrono::steady_clock::now();
  expect_fast_one_line_error(kvlab("eval ppl --model " + dir + " --text " + tmp.str(), tmp),
                             {tmp.str() + ": text file is a directory, not a regular file"},
                             std::chrono::steady_clock::now() - start);
  // an experiment spec
  ASSERT_EQ(::mkfifo((tmp / "spec.yaml").c_str(), 0600), 0);
  start = std::chrono::steady_clock::now();
  expect_fast_one_line_error(kvlab("run " + tmp / "spec.yaml" + " --dry-run", tmp),
                             {tmp / "spec.yaml" + ": experiment spec is a FIFO"}, std::chrono::steady_clock::now() - start);
}

}  // namespace
}  // namespace kvlab
