#include "kvlab/results/results_store.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"

namespace kvlab {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS cells(
  cell_id TEXT PRIMARY KEY,
  experiment TEXT,
  slug TEXT,
  model TEXT, task TEXT, method TEXT,
  config_json TEXT,
  bits_k REAL, bits_v REAL,
  cache_bytes INTEGER, memory_ratio REAL,
  seconds REAL, device TEXT, git_rev TEXT, finished_at TEXT
);
CREATE TABLE IF NOT EXISTS metrics(
  cell_id TEXT NOT NULL REFERENCES cells(cell_id),
  name TEXT NOT NULL,
  value REAL,
  PRIMARY KEY(cell_id, name)
);
)sql";

constexpr const char* kCellColumns =
    "cell_id, experiment, slug, model, task, method, config_json, bits_k, bits_v, cache_bytes, memory_ratio, "
    "seconds, device, git_rev, finished_at";

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql, const std::string& store) : store_(store) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
      fail("{}: SQL error: {}", store, sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  void bind(int i, const std::string& s) { sqlite3_bind_text(stmt_, i, s.c_str(), -1, SQLITE_TRANSIENT); }
  void bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); }
  void bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  // True while rows come back; false when done.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("{}: SQL error: {}", store_, sqlite3_errmsg(sqlite3_db_handle(stmt_)));
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p ? reinterpret_cast<const char*>(p) : "";
  }
  double real(int col) const { return sqlite3_column_double(stmt_, col); }
  int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  std::string store_;
};

// Writes cells and their metrics with two prepared statements (inside the caller's transaction).
class CellWriter {
 public:
  CellWriter(sqlite3* db, const std::string& store)
      : cell_(db, std::string("INSERT INTO cells(") + kCellColumns +
                      ") VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", store),
        metric_(db, "INSERT INTO metrics(cell_id, name, value) VALUES(?, ?, ?)", store) {}

  void write(const CellRecord& c) {
    cell_.reset();
    cell_.bind(1, c.cell_id);
    cell_.bind(2, c.experiment);
    cell_.bind(3, c.slug);
    cell_.bind(4, c.model);
    cell_.bind(5, c.task);
    cell_.bind(6, c.method);
    cell_.bind(7, c.config.dump());
    cell_.bind(8, c.bits_k);
    cell_.bind(9, c.bits_v);
    cell_.bind(10, c.cache_bytes);
    cell_.bind(11, c.memory_ratio);
    cell_.bind(12, c.seconds);
    cell_.bind(13, c.device);
    cell_.bind(14, c.git_rev);
    cell_.bind(15, c.finished_at);
    cell_.step();
    for (const auto& [name, value] : c.metrics) {
      metric_.reset();
      metric_.bind(1, c.cell_id);
      metric_.bind(2, name);
      metric_.bind(3, value);
      metric_.step();
    }
  }

 private:
  Statement cell_, metric_;
};

CellRecord read_cell(const Statement& s, const std::string& store) {
  CellRecord c;
  c.cell_id = s.text(0);
  c.experiment = s.text(1);
  c.slug = s.text(2);
  c.model = s.text(3);
  c.task = s.text(4);
  c.method = s.text(5);
  try {
    c.config = nlohmann::json::parse(s.text(6));
  } catch (const std::exception& e) {
    fail("{}: cell {}: config_json is not valid JSON", store, c.cell_id);
  }
  c.bits_k = s.real(7);
  c.bits_v = s.real(8);
  c.cache_bytes = s.integer(9);
  c.memory_ratio = s.real(10);
  c.seconds = s.real(11);
  c.device = s.text(12);
  c.git_rev = s.text(13);
  c.finished_at = s.text(14);
  return c;
}

void load_metrics(sqlite3* db, const std::string& store, std::vector<CellRecord>& cells) {
  std::map<std::string, CellRecord*> by_id;
  for (auto& c : cells) by_id[c.cell_id] = &c;
  Statement s(db, "SELECT cell_id, name, value FROM metrics", store);
  while (s.step()) {
    auto it = by_id.find(s.text(0));
    if (it != by_id.end()) it->second->metrics[s.text(1)] = s.real(2);
  }
}

bool close_enough(double a, double b, double rel_tol) {
  if (a == b || (std::isnan(a) && std::isnan(b))) return true;
  return std::abs(a - b) <= rel_tol * std::max(std::abs(a), std::abs(b));
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string json_scalar_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// A file path for an SQLite URI ("file:<path>?..."): '%', '?' and '#' percent-encoded.
std::string uri_path(const std::string& path) {
  std::string out;
  for (char c : std::filesystem::absolute(path).string()) {
    if (c == '%' || c == '?' || c == '#') out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    else out += c;
  }
  return out;
}

std::ofstream open_output(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream out(path, std::ios::binary);
  if (!out) fail("{}: cannot write", path);
  return out;
}

}  // namespace

bool CellRecord::same_result(const CellRecord& o, double rel_tol, std::string* why) const {
  auto differ = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  if (config != o.config) return differ("config differs");
  if (metrics.size() != o.metrics.size()) return differ("metric names differ");
  for (const auto& [name, value] : metrics) {
    auto it = o.metrics.find(name);
    if (it == o.metrics.end()) return differ(fmt::format("metric '{}' missing", name));
    if (!close_enough(value, it->second, rel_tol))
      return differ(fmt::format("metric '{}' is {} vs {}", name, value, it->second));
  }
  if (!close_enough(bits_k, o.bits_k, rel_tol) || !close_enough(bits_v, o.bits_v, rel_tol) ||
      cache_bytes != o.cache_bytes)
    return differ("cache bits/bytes differ");
  return true;
}

ResultsStore::ResultsStore(const std::string& path, Mode mode) : path_(path) {
  if (mode == Mode::ReadOnly && !std::filesystem::exists(path)) fail("{}: results store not found", path);
  if (mode == Mode::ReadWrite) {
    const auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
  }
  check_input_file(path, "results store");
  auto open = [&](const std::string& name, int flags) {
    if (sqlite3_open_v2(name.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      db_ = nullptr;
      fail("{}: cannot open results store: {}", path, msg);
    }
    // Writers from several processes (shards on one machine) wait for each other instead of failing.
    sqlite3_busy_timeout(db_, 60000);
  };
  open(path, mode == Mode::ReadOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  // SQLite opens a file it may not write (permissions, a read-only disk) read-only without a word:
  // say so here rather than fail on the first write.
  if (mode == Mode::ReadWrite && sqlite3_db_readonly(db_, "main") == 1) {
    sqlite3_close(db_);
    db_ = nullptr;
    fail("{}: the results store is read-only here (the file, its folder or its disk cannot be written)", path);
  }
  auto close_and_fail = [&](const std::string& message) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(message);
  };
  if (mode == Mode::ReadWrite) {
    try {
      exec("PRAGMA journal_mode=WAL");
      exec("PRAGMA synchronous=FULL");
      exec(kSchema);
    } catch (const Error& e) {
      const int code = sqlite3_extended_errcode(db_) & 0xff;
      if (code == SQLITE_READONLY || code == SQLITE_CANTOPEN || code == SQLITE_PERM || code == SQLITE_IOERR)
        close_and_fail(fmt::format("{}: cannot write the results store: {}", path, sqlite3_errmsg(db_)));
      close_and_fail(fmt::format("{}: not a kvlab results store ({})", path, e.what()));
    }
  } else if (sqlite3_exec(db_, "SELECT 1 FROM sqlite_master LIMIT 1", nullptr, nullptr, nullptr) != SQLITE_OK &&
             ((sqlite3_extended_errcode(db_) & 0xff) == SQLITE_CANTOPEN ||
              (sqlite3_extended_errcode(db_) & 0xff) == SQLITE_READONLY)) {
    // A WAL store in a folder or on a disk we cannot write, without its -shm file: SQLite reads it
    // only as immutable (nothing we could see is writing it there).
    sqlite3_close(db_);
    db_ = nullptr;
    open("file:" + uri_path(path) + "?immutable=1", SQLITE_OPEN_READONLY | SQLITE_OPEN_URI);
  }
  // Is this a kvlab store? The cells table must have our columns.
  try {
    Statement s(db_, std::string("SELECT ") + kCellColumns + " FROM cells LIMIT 0", path_);
    s.step();
    Statement m(db_, "SELECT cell_id, name, value FROM metrics LIMIT 0", path_);
    m.step();
  } catch (const Error& e) {
    close_and_fail(fmt::format("{}: not a kvlab results store ({})", path, e.what()));
  }
}

ResultsStore::~ResultsStore() {
  if (db_) sqlite3_close(db_);
}

void ResultsStore::exec(const std::string& sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    fail("{}: SQL error: {}", path_, msg);
  }
}

std::set<std::string> ResultsStore::cell_ids() const {
  std::set<std::string> ids;
  Statement s(db_, "SELECT cell_id FROM cells", path_);
  while (s.step()) ids.insert(s.text(0));
  return ids;
}

bool ResultsStore::has(const std::string& cell_id) const {
  Statement s(db_, "SELECT 1 FROM cells WHERE cell_id = ?", path_);
  s.bind(1, cell_id);
  return s.step();
}

int64_t ResultsStore::count() const {
  Statement s(db_, "SELECT COUNT(*) FROM cells", path_);
  s.step();
  return s.integer(0);
}

std::optional<CellRecord> ResultsStore::find(const std::string& cell_id) const {
  Statement s(db_, std::string("SELECT ") + kCellColumns + " FROM cells WHERE cell_id = ?", path_);
  s.bind(1, cell_id);
  if (!s.step()) return std::nullopt;
  std::vector<CellRecord> one{read_cell(s, path_)};
  Statement m(db_, "SELECT name, value FROM metrics WHERE cell_id = ?", path_);
  m.bind(1, cell_id);
  while (m.step()) one[0].metrics[m.text(0)] = m.real(1);
  return one[0];
}

std::vector<CellRecord> ResultsStore::cells() const {
  std::vector<CellRecord> out;
  Statement s(db_, std::string("SELECT ") + kCellColumns +
                       " FROM cells ORDER BY experiment, model, task, method, slug, cell_id", path_);
  while (s.step()) out.push_back(read_cell(s, path_));
  load_metrics(db_, path_, out);
  return out;
}

ResultsStore::Insert ResultsStore::insert(const CellRecord& c) {
  exec("BEGIN IMMEDIATE");
  try {
    if (auto existing = find(c.cell_id)) {
      exec("ROLLBACK");
      std::string why;
      if (!existing->same_result(c, 1e-6, &why))
        fail("{}: cell {} ({}) is already stored with a different result: {}", path_, c.cell_id, c.slug, why);
      return Insert::AlreadyPresent;
    }
    CellWriter(db_, path_).write(c);
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  return Insert::Added;
}

int64_t ResultsStore::merge_from(const ResultsStore& source) { return merge_from({&source})[0]; }

std::vector<int64_t> ResultsStore::merge_from(const std::vector<const ResultsStore*>& sources) {
  std::vector<std::vector<CellRecord>> incoming;
  for (const ResultsStore* s : sources) incoming.push_back(s->cells());
  std::vector<int64_t> added(sources.size(), 0);
  // Checked and written in one transaction: an error anywhere leaves the store as it was.
  exec("BEGIN IMMEDIATE");
  try {
    std::map<std::string, std::pair<const CellRecord*, size_t>> adding;  // id -> cell, its source
    std::vector<const CellRecord*> to_add;                               // in the sources' order
    for (size_t i = 0; i < sources.size(); ++i) {
      for (const auto& c : incoming[i]) {
        std::string why;
        if (auto existing = find(c.cell_id)) {
          if (!existing->same_result(c, 1e-6, &why))
            fail("merge {} into {}: cell {} ({}) differs: {}", sources[i]->path(), path_, c.cell_id, c.slug, why);
          continue;
        }
        const auto [it, fresh] = adding.emplace(c.cell_id, std::make_pair(&c, i));
        if (!fresh) {
          if (!it->second.first->same_result(c, 1e-6, &why))
            fail("merge {} into {}: cell {} ({}) differs from the one in {}: {}", sources[i]->path(), path_,
                 c.cell_id, c.slug, sources[it->second.second]->path(), why);
          continue;
        }
        to_add.push_back(&c);
        ++added[i];
      }
    }
    CellWriter writer(db_, path_);
    for (const CellRecord* c : to_add) writer.write(*c);
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  return added;
}

std::vector<std::string> metric_names(const std::vector<CellRecord>& cells) {
  // The headline metrics first, in the order the tasks define them; the rest alphabetically.
  static const std::vector<std::string> kFirst = {"ppl",    "ppl_fp16",       "kl_mean",         "kl_p99",
                                                   "top1_agreement", "delta_p_correct", "longbench/avg", "passkey/acc"};
  std::set<std::string> all;
  for (const auto& c : cells)
    for (const auto& [name, value] : c.metrics) all.insert(name);
  std::vector<std::string> names;
  for (const auto& n : kFirst)
    if (all.erase(n)) names.push_back(n);
  names.insert(names.end(), all.begin(), all.end());
  return names;
}

namespace {

// Parameter columns: the union over cells of method.<p> and task.<p>, in first-seen order.
std::vector<std::pair<std::string, std::string>> param_columns(const std::vector<CellRecord>& cells) {
  std::vector<std::pair<std::string, std::string>> cols;  // (section, param)
  std::set<std::string> seen;
  for (const auto& c : cells)
    for (const char* section : {"method", "task"}) {
      if (!c.config.contains(section) || !c.config[section].contains("params")) continue;
      for (const auto& [k, v] : c.config[section]["params"].items())
        if (seen.insert(std::string(section) + "." + k).second) cols.push_back({section, k});
    }
  return cols;
}

}  // namespace

void export_csv(const std::vector<CellRecord>& cells, const std::string& path) {
  const auto metrics = metric_names(cells);
  const auto params = param_columns(cells);
  std::ofstream out = open_output(path);
  std::vector<std::string> header = {"cell_id", "experiment", "slug", "model", "task", "method", "seed",
                                     "bits_k", "bits_v", "cache_bytes", "memory_ratio", "seconds",
                                     "device", "git_rev", "finished_at"};
  for (const auto& [section, name] : params) header.push_back(section + "." + name);
  for (const auto& m : metrics) header.push_back(m);
  header.push_back("config_json");
  for (size_t i = 0; i < header.size(); ++i) out << (i ? "," : "") << csv_field(header[i]);
  out << "\n";
  for (const auto& c : cells) {
    std::vector<std::string> row = {c.cell_id, c.experiment, c.slug, c.model, c.task, c.method,
                                    c.config.contains("seed") ? json_scalar_text(c.config["seed"]) : "",
                                    fmt::format("{}", c.bits_k), fmt::format("{}", c.bits_v),
                                    std::to_string(c.cache_bytes), fmt::format("{}", c.memory_ratio),
                                    fmt::format("{}", c.seconds), c.device, c.git_rev, c.finished_at};
    for (const auto& [section, name] : params) {
      const auto& sec = c.config.value(section, nlohmann::json::object());
      const auto& p = sec.value("params", nlohmann::json::object());
      row.push_back(p.contains(name) ? json_scalar_text(p[name]) : "");
    }
    for (const auto& m : metrics) {
      auto it = c.metrics.find(m);
      row.push_back(it == c.metrics.end() ? "" : fmt::format("{}", it->second));
    }
    row.push_back(c.config.dump());
    for (size_t i = 0; i < row.size(); ++i) out << (i ? "," : "") << csv_field(row[i]);
    out << "\n";
  }
  if (!out) fail("{}: write error", path);
}

void export_jsonl(const std::vector<CellRecord>& cells, const std::string& path) {
  std::ofstream out = open_output(path);
  for (const auto& c : cells) {
    nlohmann::json j = {{"cell_id", c.cell_id}, {"experiment", c.experiment}, {"slug", c.slug},
                        {"model", c.model}, {"task", c.task}, {"method", c.method},
                        {"bits_k", c.bits_k}, {"bits_v", c.bits_v}, {"cache_bytes", c.cache_bytes},
                        {"memory_ratio", c.memory_ratio}, {"seconds", c.seconds}, {"device", c.device},
                        {"git_rev", c.git_rev}, {"finished_at", c.finished_at}, {"config", c.config},
                        {"metrics", c.metrics}};
    out << j.dump() << "\n";
  }
  if (!out) fail("{}: write error", path);
}

std::string utc_now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace kvlab
