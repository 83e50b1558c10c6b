// A key written twice in one YAML map is an error naming file:line (yaml-cpp keeps both and a lookup
// silently takes the first): in experiment specs and their includes, plan files, KVmix plans and
// train configs. The same key in different maps, anchors and aliases stay fine.
#include <gtest/gtest.h>

#include <fstream>

#include "../methods/kvmix/kvmix_plan_file.h"
#include "kvlab/common/yaml_file.h"
#include "kvlab/eval/throughput_methods.h"
#include "kvlab/quant/plan_file.h"
#include "kvlab/runner/experiment_spec.h"
#include "kvlab/train/train_config.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

std::string write(const test::TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir / name) << text;
  return dir / name;
}

std::string error_of(const std::function<void()>& f) { return test::error_of(f, true); }

// The check's message for `text` written to <dir>/a.yaml.
std::string check_error(const test::TempDir& dir, const std::string& text) {
  const std::string path = write(dir, "a.yaml", text);
  return error_of([&] { refuse_duplicate_yaml_keys(path); });
}

TEST(YamlDuplicateKeys, FoundInEveryMapWithBothLines) {
  test::TempDir dir;
  auto check = [&](const std::string& text) { return check_error(dir, text); };
  std::string e = check("name: x\ndtype: float32\nseed: 1\ndtype: bfloat16\n");
  EXPECT_NE(e.find(dir / "a.yaml:4: key 'dtype' appears twice in one map (first at line 2)"), std::string::npos) << e;
  e = check("methods:\n  - {name: kivi, params: {bits: 2, group: 32, bits: 4}}\n");
  EXPECT_NE(e.find("a.yaml:2: key 'bits'"), std::string::npos) << e;
  e = check("a:\n  b:\n    c: 1\n    c: 2\n");
  EXPECT_NE(e.find("a.yaml:4: key 'c' appears twice in one map (first at line 3)"), std::string::npos) << e;
  e = check("? k\n: 1\nk: 2\n");  // an explicit key is a key too
  EXPECT_NE(e.find("a.yaml:3: key 'k'"), std::string::npos) << e;

  // Not duplicates: one key per map, keys equal to values, anchors and aliases (also shared ones).
  const std::string fine = write(dir, "b.yaml",
                                 "models:\n  - {name: a, path: x}\n  - {name: b, path: x}\nname: name\n"
                                 "base: &b {bits: 2, group: 32}\nuse: *b\nagain: *b\nlist: [name, name]\n"
                                 "---\nname: second document\n");
  EXPECT_NO_THROW(refuse_duplicate_yaml_keys(fine));
  // A syntax error is left to the caller's load (which reports its position).
  EXPECT_NO_THROW(refuse_duplicate_yaml_keys(write(dir, "c.yaml", "a: [1\n")));
}

// Found by fuzz_plan_file: yaml-cpp's event parser reports another document forever after a stray
// ',' at the top level; the check reads the first document (the one the loaders use) and returns.
TEST(YamlDuplicateKeys, AStrayCommaEndsTheCheck) {
  test::TempDir dir;
  for (const char* text : {",", "a: 1\n,", ",\n,\n"}) {
    const std::string path = write(dir, "p.yaml", text);
    EXPECT_NO_THROW(refuse_duplicate_yaml_keys(path)) << text;  // returns at all: the old loop never did
  }
  EXPECT_THROW(refuse_duplicate_yaml_keys(write(dir, "d.yaml", "a: 1\na: 2\n")), Error);
}

// Found by fuzz_plan_file in CI: a map or list in key position reached yaml-cpp's
// `as<std::string>()` and escaped as a bare "bad conversion". Every reader refuses it with file:line.
TEST(YamlDuplicateKeys, MapAndListKeysAreRefusedWithTheirLine) {
  test::TempDir dir;
  auto check = [&](const std::string& text) { return check_error(dir, text); };
  std::string e = check("a: 1\n? [x, y]\n: 2\n");
  EXPECT_NE(e.find("a.yaml:2: a key is a list; keys must be plain names"), std::string::npos) << e;
  e = check("a:\n  b: 1\n  {c: 1}: 2\n");
  EXPECT_NE(e.find("a.yaml:3: a key is a map"), std::string::npos) << e;
  e = check("base: &b {bits: 2}\nuse:\n  *b : 3\n");
  EXPECT_NE(e.find("a.yaml:3: a key is an alias of a map or list"), std::string::npos) << e;
  // Lists of maps, maps as values, and an alias of a scalar as a key stay fine.
  EXPECT_NO_THROW(refuse_duplicate_yaml_keys(write(dir, "fine.yaml", "a: [{b: 1}, [c]]\nn: &n name\n*n : 2\nm: {x: [1, 2]}\n")));

  const std::string plan = write(dir, "p.yaml",
                                 "method: kvtuner\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 2, "
                                 "{note: x}: 1}\n");
  e = error_of([&] { PlanFile::load(plan); });
  EXPECT_NE(e.find("p.yaml:4: a key is a map"), std::string::npos) << e;
  const std::string presets = write(dir, "presets.yaml", "presets:\n  [k2]: {name: kivi}\n");
  e = error_of([&] { load_method_presets(presets); });
  EXPECT_NE(e.find("presets.yaml:2: a key is a list"), std::string::npos) << e;
  const std::string spec = write(dir, "s.yaml", "name: t\n? {dtype: x}\n: 1\n");
  e = error_of([&] { ExperimentSpec::load(spec); });
  EXPECT_NE(e.find("s.yaml:2: a key is a map"), std::string::npos) << e;
}

TEST(YamlDuplicateKeys, EveryYamlReaderRefusesThem) {
  test::TempDir dir;
  const std::string spec = write(dir, "t.yaml",
                                 "name: t\ndtype: float32\nmodels:\n  - {name: tiny, make: {shape: tiny}}\n"
                                 "tasks: [ppl]\nmethods: [fp16]\ndtype: bfloat16\n");
  std::string e = error_of([&] { ExperimentSpec::load(spec); });
  EXPECT_NE(e.find("t.yaml:7: key 'dtype' appears twice"), std::string::npos) << e;

  write(dir, "presets.yaml", "presets:\n  k2: {name: kivi, params: {bits: 2}}\n  k2: {name: kivi, params: {bits: 4}}\n");
  const std::string with_include =
      write(dir, "i.yaml",
            "name: t\ninclude: presets.yaml\nmodels:\n  - {name: tiny, make: {shape: tiny}}\ntasks: [ppl]\nmethods: [k2]\n");
  e = error_of([&] { ExperimentSpec::load(with_include); });
  EXPECT_NE(e.find("presets.yaml:3: key 'k2'"), std::string::npos) << e;

  const std::string plan = write(dir, "p.yaml",
                                 "method: kvtuner\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 2, k_bits: 8}\n");
  e = error_of([&] { PlanFile::load(plan); });
  EXPECT_NE(e.find("p.yaml:4: key 'k_bits'"), std::string::npos) << e;

  const std::string kvmix_plan =
      write(dir, "k.yaml", "method: kvmix\nnum_layers: 1\nnum_layers: 2\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 2}\n");
  e = error_of([&] { kvmix::read_plan_file(kvmix_plan); });
  EXPECT_NE(e.find("k.yaml:3: key 'num_layers'"), std::string::npos) << e;

  const std::string train = write(dir, "m.yaml", "train:\n  steps: 10\n  lr: 0.001\n  steps: 1000\n");
  e = error_of([&] { load_train_config(train); });
  EXPECT_NE(e.find("m.yaml:4: key 'steps'"), std::string::npos) << e;
}

}  // namespace
}  // namespace kvlab
