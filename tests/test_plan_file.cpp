// The per-layer plan file (write, read back, errors naming file and key) and the calibration
// windows the offline steps read (plain text cut like perplexity windows; .jsonl one per record).
#include <gtest/gtest.h>

#include <fstream>

#include "kvlab/common/error.h"
#include "kvlab/eval/perplexity.h"
#include "kvlab/quant/calibration_data.h"
#include "kvlab/quant/plan_file.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

// Every error here must also be one line.
std::string error_of(const std::function<void()>& f) { return test::error_of(f, true); }

TEST(PlanFile, RoundTripKeepsCoreAndMethodKeys) {
  test::TempDir tmp;
  PlanFile p;
  p.method = "kvtuner";
  p.model = "/models/x";
  p.calibration = YAML::Load("{calib: wiki.txt, samples: 8}");
  p.extra = YAML::Load("{choice: {avg_bits: 3.25}, pareto: [{avg_bits: 2, loss: 0.5}]}");
  for (int l = 0; l < 3; ++l) {
    PlanFileLayer pl;
    pl.k_bits = l == 0 ? 8 : 4, pl.v_bits = 2;
    if (l == 1) pl.k_score = 0.0123;
    pl.node = YAML::Load("{cluster: " + std::to_string(l % 2) + ", k_exact_channels: [[1, 2], [3, 4]]}");
    p.layers.push_back(pl);
  }
  p.save(tmp / "sub/plan.yaml");
  EXPECT_FALSE(std::filesystem::exists(tmp / "sub/plan.yaml.tmp"));

  const PlanFile q = PlanFile::load(tmp / "sub/plan.yaml");
  EXPECT_EQ(q.method, "kvtuner");
  EXPECT_EQ(q.model, "/models/x");
  EXPECT_EQ(q.calibration["samples"].as<int>(), 8);
  EXPECT_DOUBLE_EQ(q.extra["choice"]["avg_bits"].as<double>(), 3.25);
  EXPECT_EQ(q.extra["pareto"].size(), 1u);
  ASSERT_EQ(q.layers.size(), 3u);
  EXPECT_EQ(q.layers[0].k_bits, 8);
  EXPECT_EQ(q.layers[2].v_bits, 2);
  EXPECT_DOUBLE_EQ(*q.layers[1].k_score, 0.0123);
  EXPECT_FALSE(q.layers[0].k_score);
  EXPECT_EQ(q.layers[1].node["cluster"].as<int>(), 1);
  EXPECT_EQ(q.layers[2].node["k_exact_channels"][1][0].as<int>(), 3);
  EXPECT_NO_THROW(q.check("kvtuner", 3));
  EXPECT_NE(error_of([&] { q.check("kvtuner", 4); }).find("model has 4 layers"), std::string::npos);
  EXPECT_NE(error_of([&] { q.check("kvmix", 3); }).find("expected 'kvmix'"), std::string::npos);

  // One flow-style line per layer, as a person would write it.
  std::ifstream in(tmp / "sub/plan.yaml");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("- {layer: 1, k_bits: 4, v_bits: 2, k_score: 0.0123, cluster: 1"), std::string::npos) << text;
}

TEST(PlanFile, ErrorsNameTheFileAndKey) {
  test::TempDir tmp;
  auto load_error = [&](const std::string& body) {
    std::ofstream(tmp / "p.yaml") << body;
    return error_of([&] { PlanFile::load(tmp / "p.yaml"); });
  };
  EXPECT_NE(load_error("num_layers: 1\nlayers: []\n").find("p.yaml: missing key 'method'"), std::string::npos);
  EXPECT_NE(load_error("method: m\nnum_layers: 2\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 2}\n")
                .find("num_layers is 2 but layers has 1"),
            std::string::npos);
  EXPECT_NE(load_error("method: m\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: two, v_bits: 2}\n")
                .find("layers[0].k_bits: 'two' is not an integer"),
            std::string::npos);
  EXPECT_NE(load_error("method: m\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 7}\n")
                .find("layers[0].v_bits: 7 bits is not one of"),
            std::string::npos);
  EXPECT_NE(load_error("method: m\nnum_layers: 1\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 2, k_score: x}\n")
                .find("layers[0].k_score"),
            std::string::npos);
  EXPECT_NE(load_error("method: m\nnum_layers: 1\nlayers: {a: 1}\n").find("layers must be a list"), std::string::npos);
  EXPECT_NE(load_error("method: [m\n").find("p.yaml:"), std::string::npos);
  EXPECT_NE(error_of([&] { PlanFile::load(tmp / "absent.yaml"); }).find("absent.yaml: cannot be read"), std::string::npos);
  // Found by fuzz_plan_file: a NUL in the method name did not survive save + load.
  EXPECT_NE(load_error(std::string("method: \"kv\\0tuner\"\nnum_layers: 0\nlayers: []\n"))
                .find("p.yaml: method: control character 0x00 at byte 2 of the name"),
            std::string::npos);
  EXPECT_NE(load_error("method: kvtuner\nmodel: \"a\\nb\"\nnum_layers: 0\nlayers: []\n")
                .find("p.yaml: model: control character 0x0a at byte 1"),
            std::string::npos);
}

class CharTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  std::string decode(const std::vector<int32_t>&, bool) const override { return ""; }
  int32_t vocab_size() const override { return 256; }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  std::string kind() const override { return "chars"; }
};

ParamSet data_params(const std::string& yaml) {
  return ParamSet::resolve(calibration_data_params(), YAML::Load(yaml), "test");
}

TEST(CalibrationData, TextWindowsAreThePerplexityWindows) {
  test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 2000; ++i) text += static_cast<char>('a' + i % 26);
  std::ofstream(tmp / "t.txt") << text;
  CharTokenizer tok;
  const auto w = load_calibration_windows(data_params("{calib: " + (tmp / "t.txt") + ", samples: 3, max_len: 10}"), tok);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0], (std::vector<int64_t>{1, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'}));
  EXPECT_EQ(w[1][1], 'j');  // windows are consecutive: 9 text tokens each after BOS
  PerplexityOptions opt;
  opt.ctx = 10, opt.max_windows = 3, opt.bos_id = 1;
  EXPECT_EQ(w, perplexity_windows(tok.encode(text, false), opt));
  const auto none = load_calibration_windows(data_params("{calib: " + (tmp / "t.txt") + ", samples: 2, max_len: 4, bos: none}"), tok);
  EXPECT_EQ(none[1], (std::vector<int64_t>{'e', 'f', 'g', 'h'}));
  // Asking for more windows than the text holds gives what it holds; too short a text is an error.
  EXPECT_EQ(load_calibration_windows(data_params("{calib: " + (tmp / "t.txt") + ", samples: 500, max_len: 1000}"), tok).size(), 2u);
  std::ofstream(tmp / "short.txt") << "abc";
  EXPECT_NE(error_of([&] { load_calibration_windows(data_params("{calib: " + (tmp / "short.txt") + "}"), tok); })
                .find("short.txt: 3 tokens"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_calibration_windows(data_params("{}"), tok); }).find("--calib"), std::string::npos);
}

TEST(CalibrationData, JsonlRecordsAreSamples) {
  test::TempDir tmp;
  std::ofstream(tmp / "r.jsonl") << "{\"text\": \"hello world\"}\n\n{\"context\": \"ctx\", \"input\": \"q?\"}\n"
                                 << "{\"text\": \"x\"}\n{\"text\": \"third\"}\n";
  CharTokenizer tok;
  const auto w = load_calibration_windows(data_params("{calib: " + (tmp / "r.jsonl") + ", samples: 3, max_len: 6}"), tok);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0], (std::vector<int64_t>{1, 'h', 'e', 'l', 'l', 'o'}));  // truncated to max_len
  EXPECT_EQ(w[1], (std::vector<int64_t>{1, 'c', 't', 'x', '\n', 'q'}));
  EXPECT_EQ(w[2], (std::vector<int64_t>{1, 'x'}));
  std::ofstream(tmp / "bad.jsonl") << "{\"text\": \"ok\"}\n{\"answers\": []}\n";
  EXPECT_NE(error_of([&] { load_calibration_windows(data_params("{calib: " + (tmp / "bad.jsonl") + "}"), tok); })
                .find("bad.jsonl:2"),
            std::string::npos);
}

}  // namespace
}  // namespace kvlab
