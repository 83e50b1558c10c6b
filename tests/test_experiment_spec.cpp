// Experiment specs and their grids: expansion (sweeps, presets, includes, seeds, shards), stable
// cell ids, and the errors a user meets (file:line, the key, one line) before any work is done.
#if defined(__SANITIZE_ADDRESS__)
#define KVLAB_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVLAB_TEST_UNDER_ASAN 1
#endif
#endif
#if KVLAB_TEST_UNDER_ASAN
#include <cstddef>
// From the ASan runtime (sanitizer/allocator_interface.h, which GCC does not install).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif
#include <gtest/gtest.h>
#include <malloc.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "kvlab/common/error.h"
#include "kvlab/common/sha256.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/runner/sweep.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

// A model block every spec here uses: a random tiny checkpoint (4 layers, head_dim 16), generated
// only when a run needs it; building a grid only reads its shape.
const char* kHeader = R"(name: t
models:
  - {name: tiny, make: {shape: tiny, seed: 3}}
tasks:
  - name: ppl
    params: {text: "${repo}/datasets/tiny/tokenizer_corpus.txt", ctx: 64, max_windows: 2}
)";  // 6 lines: a spec's "methods:" starts on line 7

std::string write(const test::TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir / name) << text;
  return dir / name;
}

Grid grid_of(const std::string& path) { return build_grid(ExperimentSpec::load(path), GridOptions{}); }

// Every error here must also be one line.
std::string error_of(const std::function<void()>& f) { return test::error_of(f, true); }

std::string spec_error(const std::string& text) {
  test::TempDir dir;
  const std::string path = write(dir, "t.yaml", text);
  return error_of([&] { grid_of(path); });
}

std::vector<std::string> slugs(const Grid& g) {
  std::vector<std::string> out;
  for (const auto& c : g.cells) out.push_back(c.slug);
  return out;
}

TEST(Sha256, KnownVectors) {
  // FIPS 180-4 examples.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 s;  // a million 'a', fed in uneven pieces
  const std::string chunk(977, 'a');
  size_t left = 1000000;
  while (left) {
    const size_t n = std::min(left, chunk.size());
    s.update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(s.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FileFingerprintSeesSizeAndEnds) {
  test::TempDir dir;
  std::string big(3 << 20, 'x');
  std::ofstream(dir / "a", std::ios::binary) << big;
  const std::string fa = file_fingerprint(dir / "a");
  big[0] = 'y';
  std::ofstream(dir / "b", std::ios::binary) << big;
  big[0] = 'x';
  big.back() = 'y';
  std::ofstream(dir / "c", std::ios::binary) << big;
  std::ofstream(dir / "d", std::ios::binary) << big.substr(1);
  EXPECT_NE(fa, file_fingerprint(dir / "b"));
  EXPECT_NE(fa, file_fingerprint(dir / "c"));
  EXPECT_NE(file_fingerprint(dir / "c"), file_fingerprint(dir / "d"));
  EXPECT_EQ(fa, file_fingerprint(dir / "a"));
  EXPECT_THROW(file_fingerprint(dir / "missing"), Error);
}

TEST(ExperimentGrid, SweepsExpandAndRepeatedPointsCollapse) {
  test::TempDir dir;
  const Grid g = grid_of(write(dir, "t.yaml", std::string(kHeader) + R"(methods:
  - fp16
  - {name: kivi, params: {group: 8, residual: 16}, sweep: {bits: [2, 4]}}
  - {name: uniform, params: {group: 8}}
sweep:
  bits: [2, 4]
)"));
  // fp16 has no 'bits': one cell, not two. kivi sweeps its own bits (the top-level sweep leaves it
  // alone): two cells, each met twice. uniform takes the top-level bits: two cells.
  EXPECT_EQ(slugs(g), (std::vector<std::string>{"tiny/ppl/fp16", "tiny/ppl/kivi bits=2,group=8,residual=16",
                                                 "tiny/ppl/kivi bits=4,group=8,residual=16",
                                                 "tiny/ppl/uniform bits=2,group=8", "tiny/ppl/uniform bits=4,group=8"}));
  EXPECT_EQ(g.duplicates, 3);
  std::set<std::string> ids;
  for (const auto& c : g.cells) {
    EXPECT_EQ(c.id.size(), 16u);
    EXPECT_EQ(c.id.find_first_not_of("0123456789abcdef"), std::string::npos);
    ids.insert(c.id);
    // The config holds every parameter, defaults included.
    EXPECT_EQ(c.config["task"]["params"]["bos"], "stream");
    EXPECT_EQ(c.config["model"]["fingerprint"].get<std::string>().size(), 64u);
  }
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(g.cells[1].config["method"]["params"]["prefill"], "full-precision");
  EXPECT_EQ(g.cells[1].config["method"]["params"]["bits"], 2);
}

TEST(ExperimentGrid, CellIdsDependOnTheResolvedConfigOnly) {
  test::TempDir a, b;
  const std::string methods = R"(methods:
  - {name: kivi, params: {bits: 2, group: 8, residual: 16}}
  - {name: kivi, params: {bits: 2, group: 8, residual: 16, param_dtype: float16}}
  - {name: kivi, params: {bits: 2, group: 8, residual: 32}}
)";
  const Grid ga = grid_of(write(a, "t.yaml", kHeader + methods));
  std::filesystem::create_directories(b / "deeper/folder");
  const Grid gb = grid_of(write(b, "deeper/folder/t.yaml", kHeader + methods));
  // Writing a default out (param_dtype) is the same cell; another residual is another cell.
  ASSERT_EQ(ga.cells.size(), 2u);
  EXPECT_EQ(ga.duplicates, 1);
  EXPECT_NE(ga.cells[0].id, ga.cells[1].id);
  // The same spec in another folder (another machine's checkout) gives the same ids.
  ASSERT_EQ(gb.cells.size(), 2u);
  EXPECT_EQ(ga.cells[0].id, gb.cells[0].id);
  EXPECT_EQ(ga.cells[1].id, gb.cells[1].id);
  // Another model (seed) changes every id.
  std::string other = kHeader + methods;
  other.replace(other.find("seed: 3"), 7, "seed: 4");
  const Grid gc = grid_of(write(a, "u.yaml", other));
  EXPECT_NE(gc.cells[0].id, ga.cells[0].id);
}

TEST(ExperimentGrid, PresetsIncludesJointKeysAndSeeds) {
  test::TempDir dir;
  write(dir, "presets.yaml", R"(presets:
  kivi-2: {name: kivi, params: {bits: 2, group: 8, residual: 16}}
)");
  const Grid g = grid_of(write(dir, "t.yaml", std::string(kHeader) + R"(include: presets.yaml
methods:
  - kivi-2
  - {use: kivi-2, params: {residual: 32}}
  - {name: uniform, params: {group: 16}}
  - {name: kivi, params: {bits: 4, residual: 32}}
sweep:
  "uniform.k_bits,uniform.v_bits": [[2, 4], [4, 2]]
  kivi.group: [8, 16]
  seed: [0, 1]
)"));
  const auto s = slugs(g);
  // Per seed: kivi-2, kivi-2 with R=32, uniform (2,4) and (4,2), kivi-4 with group 8 and 16.
  const std::vector<std::string> per_seed = {
      "tiny/ppl/kivi bits=2,group=8,residual=16", "tiny/ppl/kivi bits=2,group=8,residual=32",
      "tiny/ppl/uniform k_bits=2,v_bits=4,group=16", "tiny/ppl/uniform k_bits=4,v_bits=2,group=16",
      "tiny/ppl/kivi bits=4,group=8,residual=32", "tiny/ppl/kivi bits=4,group=16,residual=32"};
  std::multiset<std::string> got(s.begin(), s.end()), want;
  for (const auto& x : per_seed) want.insert(x + " seed=0"), want.insert(x + " seed=1");
  EXPECT_EQ(got, want);
  for (const auto& c : g.cells) {
    EXPECT_EQ(c.config["seed"], c.seed);
    if (c.method == "uniform") {
      EXPECT_NE(c.config["method"]["params"]["k_bits"], c.config["method"]["params"]["v_bits"]);
    }
  }
}

TEST(ExperimentGrid, ShardsPartitionTheGrid) {
  const size_t n = 10;
  std::vector<int> owner(n, -1);
  for (int64_t i = 0; i < 3; ++i) {
    const Shard s = Shard::parse(std::to_string(i) + "/3");
    for (size_t c = 0; c < n; ++c)
      if (s.contains(c)) {
        EXPECT_EQ(owner[c], -1);
        owner[c] = static_cast<int>(i);
      }
  }
  for (int o : owner) EXPECT_NE(o, -1);
  EXPECT_EQ(owner[4], 1);
  for (const char* bad : {"3/3", "1", "a/b", "-1/2", "0/0", "1/2x"})
    EXPECT_NE(error_of([&] { Shard::parse(bad); }).find(bad), std::string::npos) << bad;
}

TEST(ExperimentGrid, AbsentCheckpointsDryRunAgainstTheirShape) {
  test::TempDir dir;
  const std::string path = write(dir, "t.yaml", R"(name: t
models:
  - {name: big, path: /nonexistent/Llama-2-7b-hf, shape: llama2-7b}
tasks:
  - name: ppl
    params: {text: "${repo}/datasets/tiny/tokenizer_corpus.txt", ctx: 4096}
methods:
  - {name: kivi, params: {bits: 2}}
)");
  GridOptions dry;
  dry.allow_absent_models = true;
  const Grid g = build_grid(ExperimentSpec::load(path), dry);
  ASSERT_EQ(g.cells.size(), 1u);
  EXPECT_EQ(g.cells[0].id, "");
  ASSERT_EQ(g.notes.size(), 1u);
  EXPECT_NE(g.notes[0].find("llama2-7b"), std::string::npos) << g.notes[0];
  // A real run needs the checkpoint.
  const std::string e = error_of([&] { grid_of(path); });
  EXPECT_NE(e.find("t.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("/nonexistent/Llama-2-7b-hf"), std::string::npos) << e;
}

// Each error names the file and line, and the key at fault.
struct BadSpec {
  const char* what;
  std::string text;
  std::vector<std::string> needles;
};

TEST(ExperimentGrid, ErrorsNameFileLineAndKey) {
  const std::string h = kHeader;
  const std::vector<BadSpec> cases = {
      {"unknown top-level key", h + "methds: [fp16]\n", {"t.yaml:7", "'methds'", "did you mean 'methods'"}},
      {"unknown method", h + "methods:\n  - kiwi\n", {"t.yaml:8", "'kiwi'", "did you mean 'kivi'"}},
      {"unknown method parameter", h + "methods:\n  - name: kivi\n    params: {resdual: 16}\n",
       {"t.yaml:8", "line 9", "'resdual'", "did you mean 'residual'"}},
      {"wrong type", h + "methods:\n  - {name: kivi, params: {bits: two}}\n", {"t.yaml:8", "'bits'", "integer"}},
      {"value out of the choices", h + "methods:\n  - {name: kivi, params: {bits: 5}}\n", {"t.yaml:8", "'bits'", "5"}},
      {"impossible: residual not a multiple of the group", h + "methods:\n  - {name: kivi, params: {group: 8, residual: 12}}\n",
       {"t.yaml:8", "impossible on model 'tiny'", "residual=12", "multiple of the group size"}},
      {"impossible: per-token group does not divide head_dim",
       h + "methods:\n  - {name: uniform, params: {group: 5}}\n", {"t.yaml:8", "head_dim 16", "group=5"}},
      {"sweep key no parameter has", h + "methods:\n  - kivi\nsweep:\n  bitz: [2]\n",
       {"t.yaml:10", "'bitz'", "did you mean 'bits'"}},
      {"sweep of a fixed parameter", h + "methods:\n  - name: kivi\n    params: {bits: 2}\n    sweep: {bits: [2, 4]}\n",
       {"t.yaml:10", "'bits'", "also fixes", "line 9"}},
      {"qualified sweep no entry can take", h + "methods:\n  - {name: kivi, params: {group: 8}}\nsweep:\n  kivi.group: [8, 16]\n",
       {"t.yaml:10", "'kivi'", "fixes it"}},
      {"qualified sweep of a method not in the spec", h + "methods:\n  - kivi\nsweep:\n  uniform.bits: [2]\n",
       {"t.yaml:10", "'uniform'"}},
      {"joint sweep with the wrong arity", h + "methods:\n  - uniform\nsweep:\n  \"k_bits,v_bits\": [[2, 4], [4]]\n",
       {"t.yaml:10", "list of 2 values"}},
      {"unknown preset", h + "presets:\n  kivi-2: {name: kivi, params: {bits: 2}}\nmethods:\n  - {use: kivi2}\n",
       {"t.yaml:10", "'kivi2'", "did you mean 'kivi-2'"}},
      {"task input missing", "name: t\nmodels: [{name: m, make: {shape: tiny}}]\ntasks:\n  - {name: ppl, params: {text: nothere.txt}}\nmethods: [fp16]\n",
       {"t.yaml:4", "ppl", "nothere.txt", "not found"}},
      {"context longer than the model", "name: t\nmodels: [{name: m, make: {shape: tiny}}]\ntasks:\n  - name: ppl\n    params: {text: t.yaml, ctx: 4096}\nmethods: [fp16]\n",
       {"t.yaml:4", "'ctx'", "4096", "max_position_embeddings 2048"}},
      {"unknown task parameter", "name: t\nmodels: [{name: m, make: {shape: tiny}}]\ntasks:\n  - name: ppl\n    params: {text: t.yaml, ctxx: 5}\nmethods: [fp16]\n",
       {"t.yaml:4", "line 5", "'ctxx'", "did you mean 'ctx'"}},
      {"unknown variable", "name: t\nmodels:\n  - {name: m, path: \"${nosuchvariable}/m\"}\ntasks: [ppl]\nmethods: [fp16]\n",
       {"t.yaml:3", "${nosuchvariable}"}},
      {"two sources for one model", "name: t\nmodels:\n  - {name: m, path: x, make: {shape: tiny}}\ntasks: [ppl]\nmethods: [fp16]\n",
       {"t.yaml:3", "exactly one of path, llama2c, make"}},
      {"unknown shape", "name: t\nmodels:\n  - {make: {shape: tinyy}}\ntasks: [ppl]\nmethods: [fp16]\n",
       {"t.yaml:3", "'tinyy'", "did you mean 'tiny'"}},
      {"YAML syntax", "name: t\nmodels: [\n", {"t.yaml:", "YAML syntax error"}},
      {"models not a list", "name: t\nmodels: tiny\ntasks: [ppl]\nmethods: [fp16]\n", {"t.yaml:2", "'models'"}},
      {"no name", "models: [x]\ntasks: [ppl]\nmethods: [fp16]\n", {"t.yaml", "'name'"}},
  };
  for (const auto& c : cases) {
    const std::string e = spec_error(c.text);
    for (const auto& n : c.needles) EXPECT_NE(e.find(n), std::string::npos) << c.what << ": '" << n << "' not in: " << e;
  }
}

std::string integers(int from, int count, int step = 1) {
  std::string s = "[";
  for (int i = 0; i < count; ++i) s += (i ? ", " : "") + std::to_string(from + i * step);
  return s + "]";
}

// A grid beyond the limit (100,000 cells) is refused before it is expanded, naming the count and
// the keys that make it (a 10^6-cell grid once took minutes and then ran out of memory).
TEST(ExperimentGrid, AGridBeyondTheLimitIsRefusedBeforeExpansion) {
  const std::string e = spec_error(R"(name: big
models:
  - {name: tiny, make: {shape: tiny, seed: 3}}
tasks:
  - name: ppl
    params: {text: "${repo}/datasets/tiny/tokenizer_corpus.txt", ctx: 64}
    sweep: {max_windows: )" + integers(1, 1000) + R"(}
methods:
  - fp16
sweep:
  seed: )" + integers(0, 1000) + "\n");
  for (const char* needle : {"t.yaml: the grid has 1000000 cells, more than the limit of 100000", "1 model",
                             "sweep 'seed' (1000 values)", "1000 task variants (ppl: sweep 'max_windows' (1000 values))",
                             "1 method variant"})
    EXPECT_NE(e.find(needle), std::string::npos) << needle << " not in: " << e;

  // Just under the limit is fine (and counts every entry's own sweep).
  test::TempDir dir;
  const Grid g = grid_of(write(dir, "t.yaml", std::string(kHeader) + "methods:\n  - fp16\n  - {name: kivi, params: "
                                             "{group: 8}, sweep: {residual: [8, 16]}}\nsweep:\n  seed: " +
                                             integers(0, 300) + "\n"));
  EXPECT_EQ(g.cells.size(), 900u);
}

// Heap bytes in use (small blocks and mmap'd ones). Under AddressSanitizer malloc is its allocator,
// which glibc's mallinfo2 does not see (it reads 0): ask the sanitizer instead.
size_t heap_in_use() {
#if KVLAB_TEST_UNDER_ASAN
  return __sanitizer_get_current_allocated_bytes();
#else
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
#endif
}

// The grid's memory grows linearly with its cells. (yaml-cpp merges the memory pool of every node put
// into a map into the map's own; each cell's parameter map used to take in every earlier cell's nodes,
// so 3,200 cells took 3.4 GB.)
TEST(ExperimentGrid, MemoryGrowsLinearlyWithTheCells) {
  test::TempDir dir;
  auto bytes_per_cell = [&](int seeds) {
    const ExperimentSpec spec = ExperimentSpec::load(
        write(dir, "t.yaml", std::string(kHeader) + "methods:\n  - fp16\n  - {name: kivi, params: {group: 8, residual: 16}}\n"
                             "sweep:\n  seed: " + integers(0, seeds) + "\n"));
    const size_t before = heap_in_use();
    const Grid g = build_grid(spec, GridOptions{});
    EXPECT_EQ(g.cells.size(), 2u * seeds);
    return static_cast<double>(heap_in_use() - before) / static_cast<double>(g.cells.size());
  };
  const double small = bytes_per_cell(60), large = bytes_per_cell(480);
  EXPECT_LT(large, 1.5 * small) << "bytes per cell: " << small << " with 120 cells, " << large << " with 960";
}

// Found by fuzz_experiment_spec: an include (or a model path) too long for the file system made
// std::filesystem throw its own error out of the loader; it is the loader's one line now.
TEST(ExperimentSpecs, ANameTooLongForTheFileSystemIsNotFound) {
  test::TempDir dir;
  const std::string long_name(5000, 'x');
  const std::string e = error_of([&] {
    grid_of(write(dir, "t.yaml", std::string(kHeader) + "include: " + long_name + "\nmethods:\n  - fp16\n"));
  });
  EXPECT_NE(e.find("t.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("included file '"), std::string::npos) << e;
  EXPECT_NE(e.find("not found (File name too long)"), std::string::npos) << e;
}

TEST(ExperimentGrid, VariablesAndRelativePaths) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "data");
  std::ofstream(dir / "data/text.txt") << "hello";
  // A relative text path resolves against the spec's folder, wherever the process runs.
  const Grid g = grid_of(write(dir, "t.yaml", R"(name: t
models: [{name: m, make: {shape: tiny}}]
tasks:
  - {name: ppl, params: {text: data/text.txt}}
methods: [fp16]
)"));
  ASSERT_EQ(g.cells.size(), 1u);
  EXPECT_EQ(g.cells[0].config["task"]["params"]["text"], "data/text.txt");  // recorded as written
  ::setenv("KVLAB_TEST_SPEC_VAR", "/some/where", 1);
  EXPECT_EQ(expand_variables("${KVLAB_TEST_SPEC_VAR}/x", "w"), "/some/where/x");
  EXPECT_EQ(expand_variables("${repo}/a", "w"), std::string(KVLAB_SOURCE_DIR) + "/a");
  ::setenv("KVLAB_SHARED", "/elsewhere/shared", 1);
  EXPECT_EQ(expand_variables("${shared}/data", "w"), "/elsewhere/shared/data");
  ::unsetenv("KVLAB_SHARED");
  EXPECT_EQ(resolve_path("a/../b.txt", "/base", "w"), "/base/b.txt");
  EXPECT_NE(error_of([] { expand_variables("${unterminated", "spec.yaml:4"); }).find("spec.yaml:4"), std::string::npos);
}

}  // namespace
}  // namespace kvlab
