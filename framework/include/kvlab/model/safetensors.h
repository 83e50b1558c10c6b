#pragma once
// Reader and writer of the safetensors format (https://huggingface.co/docs/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data section]
// The header maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to
// the data section) plus an optional "__metadata__" string map. Files are memory-mapped; tensors are
// zero-copy CPU views that keep the mapping alive. Every defect is one kvlab::Error naming the file
// and, where there is one, the tensor.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kvlab {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;            // "F32", "F16" or "BF16" (others are rejected on open)
  std::vector<int64_t> shape;
  uint64_t begin = 0;           // byte offsets inside the data section, [begin, end)
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates it completely (header length, JSON, dtypes, offsets in bounds and
  // not overlapping, byte size == product(shape) * element size). Throws kvlab::Error.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;  // throws: "<file>: no tensor '<name>'"

  // CPU tensor in the file's dtype; a view into the mapping (copied only if misaligned). The
  // mapping is read-only: writing into the view in place faults, so clone() before modifying it.
  at::Tensor tensor(const std::string& name) const;
  // Drops the mapped pages of that tensor's bytes from the process (a later read re-reads them from
  // the file): once a loader has copied a tensor, the mapping need not stay resident beside it.
  void release(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint's weights: either <dir>/model.safetensors or the shards listed by
// <dir>/model.safetensors.index.json ("weight_map": tensor -> shard file).
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir);  // throws if neither layout is present
  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;                   // sorted
  const SafetensorsEntry& entry(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;         // throws naming the checkpoint dir
  void release(const std::string& name) const;              // SafetensorsFile::release
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

// Writes tensors (F32, F16 or BF16; any device, made contiguous on CPU) to `path` atomically
// (written to "<path>.tmp" then renamed), header padded to 8 bytes, tensors in the given order.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace kvlab
