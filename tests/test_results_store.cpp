// The results store: a cell and its metrics are one transaction; the same cell twice is kept once;
// a different result for a stored id is an error naming it; merges check everything before they
// write; exports (CSV, JSONL) and the table carry the stored numbers.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/results/results_store.h"
#include "kvlab/results/results_table.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

CellRecord make_cell(const std::string& id, const std::string& method, int bits, double ppl) {
  CellRecord c;
  c.cell_id = id;
  c.experiment = "e";
  c.slug = "m/ppl/" + method + " bits=" + std::to_string(bits);
  c.model = "m";
  c.task = "ppl";
  c.method = method;
  c.config = {{"model", {{"name", "m"}}}, {"seed", 0},
              {"task", {{"name", "ppl"}, {"params", {{"ctx", 64}, {"text", "a, \"quoted\" path.txt"}}}}},
              {"method", {{"name", method}, {"params", {{"bits", bits}}}}}};
  c.bits_k = bits + 0.5;
  c.bits_v = bits + 0.25;
  c.cache_bytes = 1000 * bits;
  c.memory_ratio = bits / 16.0;
  c.seconds = 1.5;
  c.device = "cpu";
  c.git_rev = "abc";
  c.finished_at = "2026-01-01T00:00:00Z";
  c.metrics = {{"ppl", ppl}, {"kl_mean", 0.01 * bits}};
  return c;
}

using test::error_of;

int64_t count_rows(const std::string& path, const std::string& table) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, ("SELECT COUNT(*) FROM " + table).c_str(), -1, &s, nullptr);
  sqlite3_step(s);
  const int64_t n = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return n;
}

TEST(ResultsStore, InsertFindAndWalMode) {
  test::TempDir dir;
  const std::string path = dir / "sub/r.sqlite";
  {
    ResultsStore store(path);
    EXPECT_EQ(store.insert(make_cell("aa", "kivi", 2, 10.0)), ResultsStore::Insert::Added);
    EXPECT_EQ(store.insert(make_cell("bb", "uniform", 4, 9.0)), ResultsStore::Insert::Added);
    EXPECT_TRUE(store.has("aa"));
    EXPECT_FALSE(store.has("cc"));
  }
  ResultsStore store(path, ResultsStore::Mode::ReadOnly);
  const auto c = store.find("aa");
  ASSERT_TRUE(c);
  const CellRecord want = make_cell("aa", "kivi", 2, 10.0);
  EXPECT_EQ(c->config, want.config);
  EXPECT_EQ(c->metrics, want.metrics);
  EXPECT_EQ(c->slug, want.slug);
  EXPECT_DOUBLE_EQ(c->bits_k, 2.5);
  EXPECT_EQ(c->cache_bytes, 2000);
  EXPECT_EQ(c->finished_at, want.finished_at);
  EXPECT_EQ(count_rows(path, "metrics"), 4);
  // WAL journal, as the design asks (readers never block the writer).
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr);
  sqlite3_step(s);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
}

TEST(ResultsStore, TheSameCellTwiceIsKeptOnceAndADifferentResultIsAnError) {
  test::TempDir dir;
  ResultsStore store(dir / "r.sqlite");
  store.insert(make_cell("aa", "kivi", 2, 10.0));
  CellRecord again = make_cell("aa", "kivi", 2, 10.0);
  again.seconds = 99;            // another machine, another time: the same result
  again.device = "cuda:0";
  EXPECT_EQ(store.insert(again), ResultsStore::Insert::AlreadyPresent);
  EXPECT_EQ(store.count(), 1);
  EXPECT_DOUBLE_EQ(store.find("aa")->seconds, 1.5);
  const std::string e = error_of([&] { store.insert(make_cell("aa", "kivi", 2, 11.0)); });
  EXPECT_NE(e.find("aa"), std::string::npos) << e;
  EXPECT_NE(e.find("ppl"), std::string::npos) << e;
  EXPECT_EQ(count_rows(dir / "r.sqlite", "metrics"), 2);
}

TEST(ResultsStore, ForeignFilesAreRefused) {
  test::TempDir dir;
  std::ofstream(dir / "not.sqlite") << "hello, not a database at all, long enough to be a header.............";
  EXPECT_NE(error_of([&] { ResultsStore s(dir / "not.sqlite"); }).find("not.sqlite"), std::string::npos);
  sqlite3* db = nullptr;
  sqlite3_open((dir / "other.sqlite").c_str(), &db);
  sqlite3_exec(db, "CREATE TABLE cells(x INTEGER)", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_NE(error_of([&] { ResultsStore s(dir / "other.sqlite"); }).find("not a kvlab results store"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ResultsStore s(dir / "missing.sqlite", ResultsStore::Mode::ReadOnly); }).find("not found"),
            std::string::npos);
}

TEST(ResultsStore, MergeIsIdempotentAndAllOrNothing) {
  test::TempDir dir;
  {
    ResultsStore a(dir / "a.sqlite"), b(dir / "b.sqlite");
    a.insert(make_cell("aa", "kivi", 2, 10.0));
    a.insert(make_cell("bb", "kivi", 4, 9.0));
    b.insert(make_cell("bb", "kivi", 4, 9.0));  // the same cell, computed by both
    b.insert(make_cell("cc", "uniform", 2, 12.0));
  }
  ResultsStore a(dir / "a.sqlite", ResultsStore::Mode::ReadOnly), b(dir / "b.sqlite", ResultsStore::Mode::ReadOnly);
  ResultsStore c(dir / "c.sqlite");
  EXPECT_EQ(c.merge_from(a), 2);
  EXPECT_EQ(c.merge_from(b), 1);
  EXPECT_EQ(c.merge_from(b), 0);  // again: nothing new
  EXPECT_EQ(c.cell_ids(), (std::set<std::string>{"aa", "bb", "cc"}));
  EXPECT_EQ(count_rows(dir / "c.sqlite", "metrics"), 6);

  // A conflicting source: an error naming the cell, and none of its cells are written.
  {
    ResultsStore d(dir / "d.sqlite");
    d.insert(make_cell("dd", "uniform", 4, 8.0));
    d.insert(make_cell("aa", "kivi", 2, 10.5));
  }
  ResultsStore d(dir / "d.sqlite", ResultsStore::Mode::ReadOnly);
  const std::string e = error_of([&] { c.merge_from(d); });
  EXPECT_NE(e.find("cell aa"), std::string::npos) << e;
  EXPECT_FALSE(c.has("dd"));
  EXPECT_EQ(c.count(), 3);
}

// A minimal RFC 4180 reader for the test (quoted fields with doubled quotes and commas).
std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (ch == '"') quoted = false;
      else field += ch;
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      rows.back().push_back(field), field.clear();
    } else if (ch == '\n') {
      rows.back().push_back(field), field.clear();
      rows.emplace_back();
    } else {
      field += ch;
    }
  }
  rows.pop_back();
  return rows;
}

TEST(ResultsStore, CsvAndJsonlCarryEveryCellParameterAndMetric) {
  test::TempDir dir;
  const std::vector<CellRecord> cells = {make_cell("aa", "kivi", 2, 10.0), make_cell("bb", "uniform", 4, 9.0)};
  export_csv(cells, dir / "out/r.csv");
  const auto rows = read_csv(dir / "out/r.csv");
  ASSERT_EQ(rows.size(), 3u);
  const auto& h = rows[0];
  auto col = [&](const std::string& name) {
    const auto it = std::find(h.begin(), h.end(), name);
    EXPECT_NE(it, h.end()) << name;
    return static_cast<size_t>(it - h.begin());
  };
  for (size_t r = 1; r < 3; ++r) EXPECT_EQ(rows[r].size(), h.size());
  EXPECT_EQ(rows[1][col("cell_id")], "aa");
  EXPECT_EQ(rows[2][col("method")], "uniform");
  EXPECT_EQ(rows[2][col("method.bits")], "4");
  EXPECT_EQ(rows[1][col("task.text")], "a, \"quoted\" path.txt");
  EXPECT_DOUBLE_EQ(std::stod(rows[1][col("ppl")]), 10.0);
  EXPECT_DOUBLE_EQ(std::stod(rows[2][col("kl_mean")]), 0.04);
  EXPECT_DOUBLE_EQ(std::stod(rows[1][col("bits_k")]), 2.5);
  EXPECT_EQ(nlohmann::json::parse(rows[2][col("config_json")]), cells[1].config);

  export_jsonl(cells, dir / "r.jsonl");
  std::ifstream in(dir / "r.jsonl");
  std::string line;
  std::vector<nlohmann::json> objs;
  while (std::getline(in, line)) objs.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(objs.size(), 2u);
  EXPECT_EQ(objs[0]["config"], cells[0].config);
  EXPECT_DOUBLE_EQ(objs[1]["metrics"]["ppl"].get<double>(), 9.0);
  EXPECT_EQ(objs[1]["cache_bytes"], 4000);
}

TEST(ResultsTable, FiltersAndColumns) {
  const std::vector<CellRecord> cells = {make_cell("aa11", "kivi", 2, 10.0), make_cell("bb22", "kivi", 4, 9.0),
                                         make_cell("cc33", "uniform", 2, 12.0)};
  EXPECT_EQ(CellFilter({"method=kivi"}).apply(cells).size(), 2u);
  EXPECT_EQ(CellFilter({"method=kivi", "bits=2"}).apply(cells).size(), 1u);
  EXPECT_EQ(CellFilter({"method.bits=2"}).apply(cells).size(), 2u);
  EXPECT_EQ(CellFilter({"task.ctx=64"}).apply(cells).size(), 3u);
  EXPECT_EQ(CellFilter({"cell=bb"}).apply(cells)[0].cell_id, "bb22");
  EXPECT_EQ(CellFilter({"slug=uniform"}).apply(cells).size(), 1u);
  EXPECT_EQ(CellFilter({"seed=0"}).apply(cells).size(), 3u);
  std::string e = error_of([&] { CellFilter({"bitz=2"}).check_keys(cells); });
  EXPECT_NE(e.find("did you mean 'bits'"), std::string::npos) << e;
  e = error_of([&] { CellFilter({"method"}); });
  EXPECT_NE(e.find("key=value"), std::string::npos) << e;

  const std::string t = format_results_table(cells, {"ppl"});
  std::istringstream lines(t);
  std::string header, rule, row;
  std::getline(lines, header);
  std::getline(lines, rule);
  EXPECT_NE(header.find("ppl"), std::string::npos);
  EXPECT_EQ(header.find("kl_mean"), std::string::npos);
  EXPECT_EQ(header.size(), rule.size());
  std::getline(lines, row);
  EXPECT_NE(row.find("aa11"), std::string::npos);
  EXPECT_NE(row.find("m/ppl/kivi bits=2"), std::string::npos);
  EXPECT_EQ(row.substr(row.size() - 2), "10");  // right-aligned metric
  e = error_of([&] { format_results_table(cells, {"perplexity"}); });
  EXPECT_NE(e.find("'perplexity'"), std::string::npos) << e;
}

}  // namespace
}  // namespace kvlab
