// kvlab plot: figures drawn from a results store, its CSV export and plan files. Each figure's
// sidecar JSON (the numbers drawn) is checked against the rows the test wrote, with the expected
// series worked out by hand below; PNG and PDF are checked to be real files of their format.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_run.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using nlohmann::json;

struct Row {
  std::string id, model, task, method;
  json params;  // the method's resolved parameters
  double bits_k, bits_v;
  int64_t bytes;
  double ratio;
  std::map<std::string, double> metrics;
  int seed = 0;
  json task_params = {{"ctx", 64}};
};

// Written in no particular order: the plots must sort by bits themselves.
const std::vector<Row>& rows() {
  static const std::vector<Row> r = {
      {"u4", "tiny", "ppl", "uniform", {{"bits", 4}}, 4.5, 4.5, 1152, 0.28125, {{"ppl", 10.2}, {"ppl_fp16", 10.0}, {"kl_mean", 0.01}}},
      {"k2a", "tiny", "ppl", "kivi", {{"bits", 2}, {"residual", 32}}, 2.6, 2.4, 655, 0.16, {{"ppl", 11.5}, {"ppl_fp16", 10.0}, {"kl_mean", 0.08}}},
      {"f0", "tiny", "ppl", "fp16", json::object(), 16, 16, 4096, 1.0, {{"ppl", 10.0}, {"ppl_fp16", 10.0}, {"kl_mean", 0.0}}},
      {"u2", "tiny", "ppl", "uniform", {{"bits", 2}}, 2.5, 2.5, 640, 0.15625, {{"ppl", 14.0}, {"ppl_fp16", 10.0}, {"kl_mean", 0.3}}},
      {"m1", "tiny", "ppl", "kvmix", {{"k_budget", 2.5}}, 3.0, 3.4, 819, 0.2, {{"ppl", 10.6}, {"ppl_fp16", 10.0}, {"kl_mean", 0.04}}},
      {"k4", "tiny", "ppl", "kivi", {{"bits", 4}, {"residual", 32}}, 4.6, 4.4, 1188, 0.29, {{"ppl", 10.1}, {"ppl_fp16", 10.0}, {"kl_mean", 0.005}}},
      // A replicate of u4 with another seed: averaged with it into one point.
      {"u4s1", "tiny", "ppl", "uniform", {{"bits", 4}}, 4.5, 4.5, 1152, 0.28125, {{"ppl", 10.4}, {"ppl_fp16", 10.0}, {"kl_mean", 0.03}}, 1},
      {"u8", "tiny", "ppl", "uniform", {{"bits", 8}}, 8.5, 8.5, 2176, 0.53125, {{"ppl", 10.01}, {"ppl_fp16", 10.0}, {"kl_mean", 1e-4}}},
      {"k2b", "tiny", "ppl", "kivi", {{"bits", 2}, {"residual", 128}}, 2.6, 2.4, 778, 0.19, {{"ppl", 11.1}, {"ppl_fp16", 10.0}, {"kl_mean", 0.06}}},
      // A second model without an fp16 cell: its reference is the ppl_fp16 its cells carry.
      {"s2", "/models/small", "ppl", "uniform", {{"bits", 2}}, 3.0, 3.0, 6000, 0.1875, {{"ppl", 25.0}, {"ppl_fp16", 20.0}}},
      {"s4", "/models/small", "ppl", "uniform", {{"bits", 4}}, 5.0, 5.0, 10000, 0.3125, {{"ppl", 21.0}, {"ppl_fp16", 20.0}}},
      // Another task of the same model: not part of any perplexity figure.
      {"p2", "tiny", "passkey", "uniform", {{"bits", 2}}, 2.5, 2.5, 640, 0.15625, {{"passkey/acc", 0.5}}},
      // LongBench scores.
      {"lf", "lb", "longbench", "fp16", json::object(), 16, 16, 8192, 1.0,
       {{"longbench/qasper", 30}, {"longbench/trec", 60}, {"longbench/avg", 45}}},
      {"lk2", "lb", "longbench", "kivi", {{"bits", 2}}, 2.5, 2.5, 1280, 0.15625,
       {{"longbench/qasper", 25}, {"longbench/trec", 50}, {"longbench/avg", 37.5}}},
      {"lk4", "lb", "longbench", "kivi", {{"bits", 4}}, 4.5, 4.5, 2304, 0.28125,
       {{"longbench/qasper", 29}, {"longbench/trec", 58}, {"longbench/avg", 43.5}}},
      {"lm", "lb", "longbench", "kvmix", {{"k_budget", 2.5}}, 3.0, 3.4, 1638, 0.2,
       {{"longbench/qasper", 28}, {"longbench/trec", 57}, {"longbench/avg", 42.5}}},
  };
  return r;
}

json config_of(const Row& r) {
  return {{"model", r.model}, {"dtype", "float32"}, {"device", "cpu"},
          {"task", {{"name", r.task}, {"params", r.task_params}}},
          {"method", {{"name", r.method}, {"params", r.params}}}, {"seed", r.seed}};
}

void exec(sqlite3* db, const std::string& sql) {
  char* msg = nullptr;
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg), SQLITE_OK) << (msg ? msg : "") << "\n" << sql;
}

// A results store in the shared schema holding rs.
void write_store(const std::string& path, const std::vector<Row>& rs = rows()) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  exec(db, "PRAGMA journal_mode=WAL;"
           "CREATE TABLE cells(cell_id TEXT PRIMARY KEY, experiment TEXT, slug TEXT, model TEXT, task TEXT, "
           "method TEXT, config_json TEXT, bits_k REAL, bits_v REAL, cache_bytes INTEGER, memory_ratio REAL, "
           "seconds REAL, device TEXT, git_rev TEXT, finished_at TEXT);"
           "CREATE TABLE metrics(cell_id TEXT NOT NULL REFERENCES cells(cell_id), name TEXT NOT NULL, value REAL, "
           "PRIMARY KEY(cell_id, name));");
  sqlite3_stmt* cell = nullptr;
  sqlite3_stmt* metric = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT INTO cells VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", -1, &cell, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT INTO metrics VALUES(?,?,?)", -1, &metric, nullptr), SQLITE_OK);
  exec(db, "BEGIN");
  for (const Row& r : rs) {
    const std::string slug = r.model + "/" + r.task + "/" + r.method + " " + r.params.dump();
    const std::string cfg = config_of(r).dump();
    const std::vector<std::string> text = {r.id, "test", slug, r.model, r.task, r.method, cfg};
    for (size_t i = 0; i < text.size(); ++i) sqlite3_bind_text(cell, int(i) + 1, text[i].c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(cell, 8, r.bits_k);
    sqlite3_bind_double(cell, 9, r.bits_v);
    sqlite3_bind_int64(cell, 10, r.bytes);
    sqlite3_bind_double(cell, 11, r.ratio);
    sqlite3_bind_double(cell, 12, 1.25);
    sqlite3_bind_text(cell, 13, "cpu", -1, SQLITE_STATIC);
    sqlite3_bind_text(cell, 14, "0123abc", -1, SQLITE_STATIC);
    sqlite3_bind_text(cell, 15, "2025-01-01T00:00:00Z", -1, SQLITE_STATIC);
    ASSERT_EQ(sqlite3_step(cell), SQLITE_DONE) << sqlite3_errmsg(db);
    sqlite3_reset(cell);
    for (const auto& [name, value] : r.metrics) {
      sqlite3_bind_text(metric, 1, r.id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(metric, 2, name.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_double(metric, 3, value);
      ASSERT_EQ(sqlite3_step(metric), SQLITE_DONE) << sqlite3_errmsg(db);
      sqlite3_reset(metric);
    }
  }
  exec(db, "COMMIT");
  sqlite3_finalize(cell);
  sqlite3_finalize(metric);
  sqlite3_close(db);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// The CSV export format documented in plots/kvlab_results.py: one row per (cell, metric).
void write_csv(const std::string& path) {
  std::ofstream out(path);
  out << "cell_id,experiment,slug,model,task,method,config_json,bits_k,bits_v,cache_bytes,memory_ratio,seconds,"
         "device,git_rev,finished_at,metric,value\n";
  for (const Row& r : rows())
    for (const auto& [name, value] : r.metrics)
      out << r.id << ",test," << csv_field(r.model + "/" + r.method) << "," << r.model << "," << r.task << ","
          << r.method << "," << csv_field(config_of(r).dump()) << "," << r.bits_k << "," << r.bits_v << ","
          << r.bytes << "," << r.ratio << ",1.25,cpu,0123abc,2025-01-01T00:00:00Z," << name << "," << value << "\n";
}

using Points = std::vector<std::pair<double, double>>;  // (x, y)

Points points_of(const json& series) {
  Points p;
  for (const auto& pt : series) p.emplace_back(pt["x"].get<double>(), pt["y"].get<double>());
  return p;
}

void expect_points(const json& series, const Points& want, const std::string& what) {
  const Points got = points_of(series);
  ASSERT_EQ(got.size(), want.size()) << what << ": " << series.dump();
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i].first, want[i].first, 1e-9) << what << " point " << i;
    EXPECT_NEAR(got[i].second, want[i].second, 1e-9) << what << " point " << i;
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

json read_json(const std::string& path) { return json::parse(read_file(path)); }

// A real PNG (signature, IHDR with a plausible size) and a complete PDF next to it.
void expect_png_and_pdf(const std::string& stem) {
  const std::string png = read_file(stem + ".png");
  ASSERT_GT(png.size(), 24u) << stem << ".png";
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << stem;
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(png[at])) << 24) | (uint32_t(uint8_t(png[at + 1])) << 16) |
           (uint32_t(uint8_t(png[at + 2])) << 8) | uint32_t(uint8_t(png[at + 3]));
  };
  EXPECT_GT(be32(16), 300u) << "width";
  EXPECT_GT(be32(20), 150u) << "height";
  const std::string pdf = read_file(stem + ".pdf");
  EXPECT_EQ(pdf.substr(0, 5), "%PDF-") << stem;
  EXPECT_NE(pdf.find("%%EOF", pdf.size() > 64 ? pdf.size() - 64 : 0), std::string::npos) << stem;
}

std::string python_for_plots() {
  const char* v = std::getenv("KVLAB_PYTHON");
  return v && *v ? v : "/usr/bin/python3";
}

class Plots : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system((python_for_plots() + " -c 'import matplotlib, yaml' >/dev/null 2>&1").c_str()) != 0)
      GTEST_SKIP() << python_for_plots() << " lacks matplotlib or PyYAML (scripts/setup.sh installs them)";
    write_store(store());
  }
  std::string store() const { return tmp_ / "results.sqlite"; }
  std::string out() const { return tmp_ / "figs"; }
  test::CliRun plot(const std::string& args, const std::string& env = "") const {
    return test::run_kvlab("plot " + args, tmp_ / "stderr.txt", env);
  }
  test::TempDir tmp_;
};

// What the tiny/ppl figure must show: uniform's two 4-bit cells differ only in the seed and are one
// point (their mean, with their range); kivi's two 2-bit cells differ in residual, so they are two
// points at the same average bits (sorted by y) but apart on the memory axis.
void expect_tiny_ppl(const json& j) {
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["task"], "ppl");
  EXPECT_NEAR(j["reference"]["value"].get<double>(), 10.0, 1e-12);
  EXPECT_NE(j["reference"]["from"].get<std::string>().find("fp16"), std::string::npos);
  const json& bits = j["panels"]["bits"]["series"];
  ASSERT_EQ(bits.size(), 3u) << bits.dump();  // fp16 is the reference, not a line
  expect_points(bits["uniform"], {{2.5, 14.0}, {4.5, (10.2 + 10.4) / 2}, {8.5, 10.01}}, "uniform/bits");
  EXPECT_EQ(bits["uniform"][1]["n"], 2);
  EXPECT_NEAR(bits["uniform"][1]["min"].get<double>(), 10.2, 1e-12);
  EXPECT_NEAR(bits["uniform"][1]["max"].get<double>(), 10.4, 1e-12);
  expect_points(bits["kivi"], {{2.5, 11.1}, {2.5, 11.5}, {4.5, 10.1}}, "kivi/bits");
  EXPECT_EQ(bits["kivi"][0]["n"], 1);
  expect_points(bits["kvmix"], {{3.2, 10.6}}, "kvmix/bits");
  const json& mem = j["panels"]["memory"]["series"];
  EXPECT_EQ(j["panels"]["memory"]["x"], "memory_ratio");
  expect_points(mem["uniform"], {{0.15625, 14.0}, {0.28125, 10.3}, {0.53125, 10.01}}, "uniform/memory");
  expect_points(mem["kivi"], {{0.16, 11.5}, {0.19, 11.1}, {0.29, 10.1}}, "kivi/memory");
  expect_points(mem["kvmix"], {{0.2, 10.6}}, "kvmix/memory");
}

TEST_F(Plots, TradeoffDrawsEachModelsMethodsFromTheStore) {
  test::CliRun r = plot("tradeoff --store " + store() + " --metric ppl --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_png_and_pdf(out() + "/tradeoff_tiny_ppl_ppl");
  expect_tiny_ppl(read_json(out() + "/tradeoff_tiny_ppl_ppl.json"));

  // The second model gets its own figure; with no fp16 cell its reference is the carried ppl_fp16.
  expect_png_and_pdf(out() + "/tradeoff_small_ppl_ppl");
  const json small = read_json(out() + "/tradeoff_small_ppl_ppl.json");
  EXPECT_NEAR(small["reference"]["value"].get<double>(), 20.0, 1e-12);
  EXPECT_NE(small["reference"]["from"].get<std::string>().find("ppl_fp16"), std::string::npos);
  ASSERT_EQ(small["panels"]["bits"]["series"].size(), 1u);
  expect_points(small["panels"]["bits"]["series"]["uniform"], {{3.0, 25.0}, {5.0, 21.0}}, "small");
  // The passkey task has no perplexity: no figure.
  EXPECT_FALSE(std::filesystem::exists(out() + "/tradeoff_tiny_passkey_ppl.png"));
}

TEST_F(Plots, TradeoffFromTheCsvExportMatchesTheStore) {
  write_csv(tmp_ / "results.csv");
  test::CliRun r = plot("tradeoff --csv " + tmp_ / "results.csv" + " --model tiny --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_png_and_pdf(out() + "/tradeoff_tiny_ppl_ppl");
  expect_tiny_ppl(read_json(out() + "/tradeoff_tiny_ppl_ppl.json"));
  EXPECT_FALSE(std::filesystem::exists(out() + "/tradeoff_small_ppl_ppl.json")) << "--model filter ignored";
}

// What `kvlab results export --csv` writes (one row per cell, a column per metric) is read as well:
// the same figures as from the store, LongBench's per-task columns included.
TEST_F(Plots, ReadsKvlabResultsExportAsWritten) {
  test::CliRun e = test::run_kvlab("results export " + store() + " --csv " + tmp_ / "wide.csv", tmp_ / "e.txt");
  ASSERT_EQ(e.code, 0) << e.err;
  test::CliRun r = plot("tradeoff --csv " + tmp_ / "wide.csv" + " --model tiny --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_tiny_ppl(read_json(out() + "/tradeoff_tiny_ppl_ppl.json"));
  r = plot("longbench --csv " + tmp_ / "wide.csv" + " --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = read_json(out() + "/longbench_lb.json");
  expect_points(j["tasks"]["qasper"]["series"]["kivi"], {{2.5, 25}, {4.5, 29}}, "qasper kivi");
  EXPECT_NEAR(j["tasks"]["avg"]["reference"]["value"].get<double>(), 45, 1e-12);
}

TEST_F(Plots, SplitDrawsOneLinePerParameterValueAndOtherMetricsWork) {
  test::CliRun r = plot("tradeoff --store " + store() + " --task ppl --metric kl_mean --split residual "
                        "--model tiny --memory bytes --label bits --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = read_json(out() + "/tradeoff_tiny_ppl_kl_mean.json");
  const json& bits = j["panels"]["bits"]["series"];
  ASSERT_EQ(bits.size(), 4u) << bits.dump();
  expect_points(bits["kivi residual=32"], {{2.5, 0.08}, {4.5, 0.005}}, "kivi R=32");
  expect_points(bits["kivi residual=128"], {{2.5, 0.06}}, "kivi R=128");
  EXPECT_EQ(bits["kivi residual=32"][0]["label"], "2");  // the nominal width beside the held bits
  EXPECT_EQ(bits["kivi residual=32"][1]["label"], "4");
  EXPECT_EQ(bits["kvmix"][0]["label"], "") << "kvmix has no 'bits' parameter";
  expect_points(bits["uniform"], {{2.5, 0.3}, {4.5, 0.02}, {8.5, 1e-4}}, "uniform");
  EXPECT_EQ(j["panels"]["memory"]["x"], "cache_mib");
  expect_points(j["panels"]["memory"]["series"]["kvmix"], {{819 / 1048576.0, 0.04}}, "kvmix bytes");
  // KL spans three decades: log axis, where fp16's 0 cannot be drawn.
  EXPECT_FALSE(j["reference_drawn"].get<bool>());
}

TEST_F(Plots, LongBenchHasAPanelPerTask) {
  test::CliRun r = plot("longbench --store " + store() + " --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_png_and_pdf(out() + "/longbench_lb");
  const json j = read_json(out() + "/longbench_lb.json");
  ASSERT_EQ(j["tasks"].size(), 3u) << j["tasks"].dump();
  const json& qasper = j["tasks"]["qasper"];
  EXPECT_NEAR(qasper["reference"]["value"].get<double>(), 30, 1e-12);
  expect_points(qasper["series"]["kivi"], {{2.5, 25}, {4.5, 29}}, "qasper kivi");
  expect_points(qasper["series"]["kvmix"], {{3.2, 28}}, "qasper kvmix");
  expect_points(j["tasks"]["avg"]["series"]["kivi"], {{2.5, 37.5}, {4.5, 43.5}}, "avg kivi");
  expect_points(j["tasks"]["trec"]["series"]["kivi"], {{2.5, 50}, {4.5, 58}}, "trec kivi");
}

// Passkey and needle cells over context length x depth: one heat map per (task, method), fp16 first,
// replicates over seeds averaged, a combination no cell ran left empty (null).
TEST_F(Plots, RetrievalHeatMapsPerTaskAndMethod) {
  auto cell = [](const std::string& id, const std::string& task, const std::string& method, int length, double depth,
                 double acc, int seed = 0) {
    const json params = method == "fp16" ? json::object() : json{{"bits", 2}};
    const double bits = method == "fp16" ? 16 : 2.5;
    return Row{id, "tiny", task, method, params, bits, bits, 100, 0.2, {{task + "/acc", acc}}, seed,
               {{"context_length", length}, {"depth", depth}}};
  };
  const std::vector<Row> rs = {
      cell("a", "passkey", "kivi", 4096, 0.0, 0.5), cell("b", "passkey", "kivi", 2048, 0.0, 1.0),
      cell("c", "passkey", "kivi", 2048, 1.0, 0.0), cell("d", "passkey", "kivi", 2048, 1.0, 1.0, 1),
      cell("e", "passkey", "fp16", 2048, 0.0, 1.0), cell("f", "needle", "kivi", 2048, 0.5, 0.25),
  };
  const std::string path = tmp_ / "retrieval.sqlite";
  write_store(path, rs);
  test::CliRun r = plot("retrieval --store " + path + " --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_png_and_pdf(out() + "/retrieval_tiny");
  const json j = read_json(out() + "/retrieval_tiny.json");
  ASSERT_EQ(j["tasks"].size(), 2u) << j.dump();
  const json& passkey = j["tasks"]["passkey"];
  ASSERT_EQ(passkey.size(), 2u);
  EXPECT_EQ(passkey.begin().key(), "fp16") << "the fp16 panel comes first";
  const json& kivi = passkey["kivi"];
  EXPECT_EQ(kivi["lengths"], json::array({2048, 4096}));
  EXPECT_EQ(kivi["depths"], json::array({0.0, 1.0}));
  EXPECT_EQ(kivi["acc"][0][0].get<double>(), 1.0);
  EXPECT_EQ(kivi["acc"][0][1].get<double>(), 0.5) << "two seeds averaged";
  EXPECT_EQ(kivi["n"][0][1], 2);
  EXPECT_EQ(kivi["acc"][1][0].get<double>(), 0.5);
  EXPECT_TRUE(kivi["acc"][1][1].is_null()) << "4096 at depth 1 never ran";
  EXPECT_EQ(j["tasks"]["needle"]["kivi"]["acc"][0][0].get<double>(), 0.25);
  // Only needle asked for; a task without results is one clear line.
  ASSERT_EQ(plot("retrieval --store " + path + " --tasks needle --out " + out()).code, 0);
  EXPECT_EQ(read_json(out() + "/retrieval_tiny.json")["tasks"].size(), 1u);
  test::expect_one_line_error(plot("retrieval --store " + store() + " --tasks needle --out " + out()), "needle/acc");
}

// A 6-layer plan as a calibration step would write it.
const char* kPlan =
    "method: kvmix\n"
    "model: /models/Llama-tiny\n"
    "num_layers: 6\n"
    "calibration: {calib: wiki.txt, samples: 4, max_len: 128}\n"
    "layers:\n"
    "  - {layer: 0, k_bits: 3, v_bits: 4, k_score: 0.9, v_score: 0.5}\n"
    "  - {layer: 1, k_bits: 2, v_bits: 2, k_score: 0.1, v_score: 0.1}\n"
    "  - {layer: 2, k_bits: 2, v_bits: 2, k_score: 0.2, v_score: 0.05, k_ratio: 0.2}\n"
    "  - {layer: 3, k_bits: 2, v_bits: 4, k_score: 0.05, v_score: 0.6}\n"
    "  - {layer: 4, k_bits: 2, v_bits: 2, k_score: 0.3, v_score: 0.2}\n"
    "  - {layer: 5, k_bits: 3, v_bits: 2, k_score: 0.8, v_score: 0.15}\n";

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST_F(Plots, PlanHeatMapShowsThePlansBits) {
  write_text(tmp_ / "kvmix_plan.yaml", kPlan);
  test::CliRun r = plot("plan " + tmp_ / "kvmix_plan.yaml" + " --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_png_and_pdf(out() + "/plan_kvmix_plan");
  const json j = read_json(out() + "/plan_kvmix_plan.json");
  EXPECT_EQ(j["k_bits"], json({3, 2, 2, 2, 2, 3}));
  EXPECT_EQ(j["v_bits"], json({4, 2, 2, 4, 2, 2}));
  EXPECT_NEAR(j["k_avg"].get<double>(), 14.0 / 6, 1e-12);
  EXPECT_NEAR(j["v_avg"].get<double>(), 16.0 / 6, 1e-12);
}

TEST_F(Plots, ImportanceBarsCarryScoresRanksAndTiers) {
  write_text(tmp_ / "kvmix_plan.yaml", kPlan);
  test::CliRun r = plot("importance " + tmp_ / "kvmix_plan.yaml" + " --out " + out());
  ASSERT_EQ(r.code, 0) << r.err;
  expect_png_and_pdf(out() + "/importance_kvmix_plan");
  const json j = read_json(out() + "/importance_kvmix_plan.json");
  EXPECT_EQ(j["k_score"], json({0.9, 0.1, 0.2, 0.05, 0.3, 0.8}));
  EXPECT_EQ(j["v_score"], json({0.5, 0.1, 0.05, 0.6, 0.2, 0.15}));
  EXPECT_EQ(j["k_rank"], json({1, 5, 4, 6, 3, 2}));  // by k_score, highest first
  EXPECT_EQ(j["v_rank"], json({2, 5, 6, 1, 3, 4}));
  EXPECT_EQ(j["k_tiers"], json({{"2", {1, 2, 3, 4}}, {"3", {0, 5}}}));
  EXPECT_EQ(j["v_tiers"], json({{"2", {1, 2, 4, 5}}, {"4", {0, 3}}}));
}

// Through kvlab: the script's one error line becomes kvlab's, whatever part fails.
TEST_F(Plots, KvlabPlotErrorsAreOneLine) {
  const std::string missing = tmp_ / "no_such.sqlite";
  test::expect_one_line_error(plot("tradeoff --store " + missing + " --out " + out()), missing);
  EXPECT_FALSE(std::filesystem::exists(missing)) << "a missing store must not be created";
  test::expect_one_line_error(plot("tradeoff --store " + store() + " --bogus 1"), "--bogus");  // argparse
  test::expect_one_line_error(plot("tradoff --store " + store()), "did you mean 'tradeoff'");
  std::string bad = kPlan;
  bad.replace(bad.find(", v_bits: 2, k_score: 0.2"), 11, "");  // layer 2 (line 8) loses v_bits
  write_text(tmp_ / "bad.yaml", bad);
  test::expect_one_line_error(plot("plan " + tmp_ / "bad.yaml" + " --out " + out()),
                              "bad.yaml:8: layers[2]: missing key 'v_bits'");
  test::expect_one_line_error(plot("plan " + tmp_ / "bad.yaml", "KVLAB_PLOTS_DIR=" + tmp_ / "nowhere"),
                              "KVLAB_PLOTS_DIR");
  EXPECT_FALSE(std::filesystem::exists(out())) << "a failed plot wrote files";
}

// The scripts run directly (as the README's python command does; no LibTorch start-up per case).
TEST_F(Plots, BadInputIsOneLineAndWritesNothing) {
  auto script = [&](const std::string& name, const std::string& args) {
    return test::run_command(python_for_plots() + " " + KVLAB_SOURCE_DIR + "/plots/" + name + " " + args,
                                tmp_ / "stderr.txt");
  };
  const test::CliRun unknown_metric = script("tradeoff.py", "--store " + store() + " --metric perplexty --out " + out());
  test::expect_one_line_error(unknown_metric, "metric 'perplexty' is not in");
  EXPECT_NE(unknown_metric.err.find("available: kl_mean, longbench/avg"), std::string::npos) << "lists the metrics";
  write_text(tmp_ / "notes.txt", "not a database, just text\n");
  test::expect_one_line_error(script("tradeoff.py", "--store " + tmp_ / "notes.txt"), "notes.txt");
  test::expect_one_line_error(script("tradeoff.py", "--out " + out()), "--store");
  test::expect_one_line_error(script("tradeoff.py", "--store " + store() + " --task nosuch"), "task=nosuch");
  test::expect_one_line_error(script("tradeoff.py", "--store " + store() + " --split nosuch"), "nosuch");
  test::expect_one_line_error(script("tradeoff.py", "--store " + store() + " --methods fp16"), "nothing to draw");
  test::expect_one_line_error(script("longbench.py", "--store " + store() + " --tasks qasper,nosuch"),
                              "longbench/nosuch");
  std::string wide = kPlan;
  wide.replace(wide.find("k_bits: 3, v_bits: 2"), 9, "k_bits: 17");
  write_text(tmp_ / "wide.yaml", wide);
  test::expect_one_line_error(script("plan.py", tmp_ / "wide.yaml"), "wide.yaml:11: layers[5].k_bits");
  write_text(tmp_ / "short.yaml", "method: kivi\nnum_layers: 2\nlayers:\n  - {layer: 0, k_bits: 2, v_bits: 2}\n"
                                  "  - {layer: 1, k_bits: 2, v_bits: 2}\n");
  test::expect_one_line_error(script("importance.py", tmp_ / "short.yaml" + " --out " + out()), "k_score");
  test::expect_one_line_error(script("plan.py", tmp_ / "absent.yaml"), "absent.yaml");
  EXPECT_FALSE(std::filesystem::exists(out())) << "a failed plot wrote files";
}

}  // namespace
}  // namespace kvlab
