#pragma once
// The results store: one SQLite file (WAL) with a row per finished experiment cell and a row per
// (cell, metric). A cell and its metrics are written in one transaction, so a process killed at any
// moment leaves either the whole cell or nothing; the cell's row existing is what "done" means.
// Schema (shared with plots/; keep to it):
//   cells(cell_id PK, experiment, slug, model, task, method, config_json, bits_k, bits_v,
//         cache_bytes, memory_ratio, seconds, device, git_rev, finished_at)
//   metrics(cell_id, name, value; PK(cell_id, name))
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

struct sqlite3;

namespace kvlab {

struct CellRecord {
  std::string cell_id;        // hex hash of config (runner/cell_id.h)
  std::string experiment;     // spec name
  std::string slug;           // readable: "tiny/ppl/kivi bits=2"
  std::string model, task, method;
  nlohmann::json config;      // the fully resolved config the id hashes
  double bits_k = 0, bits_v = 0;
  int64_t cache_bytes = 0;
  double memory_ratio = 0;
  double seconds = 0;
  std::string device, git_rev, finished_at;  // finished_at: ISO-8601 UTC
  std::map<std::string, double> metrics;

  // Same computation and same numbers: config equal, same metric names, values equal to `rel_tol`
  // (relative). Timing, device text, revision and date may differ (two machines ran it).
  bool same_result(const CellRecord& other, double rel_tol = 1e-6, std::string* why = nullptr) const;
};

class ResultsStore {
 public:
  enum class Mode { ReadWrite, ReadOnly };
  // ReadWrite creates the file (and its folder) and the schema if needed. A file that is not a
  // kvlab store is an error naming it.
  explicit ResultsStore(const std::string& path, Mode mode = Mode::ReadWrite);
  ~ResultsStore();
  ResultsStore(const ResultsStore&) = delete;
  ResultsStore& operator=(const ResultsStore&) = delete;

  const std::string& path() const { return path_; }
  std::set<std::string> cell_ids() const;
  bool has(const std::string& cell_id) const;
  std::optional<CellRecord> find(const std::string& cell_id) const;
  std::vector<CellRecord> cells() const;  // ordered by experiment, model, task, method, slug
  int64_t count() const;

  enum class Insert { Added, AlreadyPresent };
  // One transaction: the cell row and its metric rows. If the id is already stored with the same
  // result (same_result) nothing changes (AlreadyPresent); with a different result it is an error
  // naming the cell.
  Insert insert(const CellRecord& cell);

  // Adds every cell of `source` not yet here, in one transaction; all conflicts are checked first,
  // so on an error nothing is written. Returns the number of cells added.
  int64_t merge_from(const ResultsStore& source);
  // The same for several sources in one transaction: conflicts with the cells here and between the
  // sources are all checked first. Returns the number of cells each source adds.
  std::vector<int64_t> merge_from(const std::vector<const ResultsStore*>& sources);

 private:
  void exec(const std::string& sql) const;
  std::string path_;
  sqlite3* db_ = nullptr;
};

// The metric names present in `cells`: the headline ones (ppl, ppl_fp16, kl_mean, ...) first, then
// the others in alphabetical order.
std::vector<std::string> metric_names(const std::vector<CellRecord>& cells);

// CSV (one row per cell: the columns, then method.<param>, task.<param>, then one column per metric;
// RFC 4180 quoting) and JSONL (one object per cell with its config and metrics).
void export_csv(const std::vector<CellRecord>& cells, const std::string& path);
void export_jsonl(const std::vector<CellRecord>& cells, const std::string& path);

// Current time as ISO-8601 UTC, e.g. "2026-11-23T11:00:47Z".
std::string utc_now_iso8601();

}  // namespace kvlab
