#pragma once
// Cooperation between processes that run cells into one results store at the same time (two
// `kvlab run` of one spec, shards on one machine): before computing a cell, a process claims it with
// an advisory lock on one byte of "<store>-claims", at an offset given by the cell id. The locks are
// open-file-description locks, which the kernel drops when the process ends, so a killed run leaves
// no stale claim. A cell claimed elsewhere is left to its claimer; the runner comes back to it at the
// end and finds it stored, or runs it itself when the claimer died without storing it.
#include <string>

namespace kvlab {

class CellClaims {
 public:
  // Opens (creating it if needed) "<store_path>-claims". On a file system without locks, claims
  // always succeed and the runner behaves as without them.
  explicit CellClaims(const std::string& store_path);
  ~CellClaims();
  CellClaims(const CellClaims&) = delete;
  CellClaims& operator=(const CellClaims&) = delete;

  const std::string& path() const { return path_; }
  // Claims `cell_id` if no other process holds it; true when this process holds it now.
  bool try_claim(const std::string& cell_id);
  // Waits until `cell_id` can be claimed, then claims it.
  void claim_waiting(const std::string& cell_id);
  void release(const std::string& cell_id);

 private:
  bool lock(const std::string& cell_id, bool wait);
  std::string path_;
  int fd_ = -1;
};

// Releases a claim when it goes out of scope.
class ClaimRelease {
 public:
  ClaimRelease(CellClaims& claims, std::string cell_id) : claims_(claims), cell_id_(std::move(cell_id)) {}
  ~ClaimRelease() { claims_.release(cell_id_); }
  ClaimRelease(const ClaimRelease&) = delete;
  ClaimRelease& operator=(const ClaimRelease&) = delete;

 private:
  CellClaims& claims_;
  std::string cell_id_;
};

}  // namespace kvlab
