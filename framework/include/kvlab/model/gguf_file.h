#pragma once
// Reader of GGUF files (llama.cpp's single-file checkpoint format), versions 2 and 3:
//   "GGUF" | u32 version | u64 tensor_count | u64 metadata_count
//   metadata_count x (string key, u32 value type, value)      strings: u64 length + UTF-8 bytes
//   tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset)
//   padding to `general.alignment` (default 32) | data section (tensor offsets are relative to it)
// All little-endian. dims[0] varies fastest, so a tensor's LibTorch shape is dims reversed (a
// Linear weight stored with dims [in, out] is [out, in], HF's layout).
//
// The file is memory-mapped and validated completely on open; every defect is one kvlab::Error
// naming the file and the key or tensor at fault. No buffer is sized from a count before the count
// is checked against the bytes that remain, so a hostile file cannot make the reader allocate more
// than the file's own size (about).
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvlab/model/gguf_dequant.h"

namespace kvlab {

enum class GgufValueType : uint32_t {
  UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
  String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
};
std::string gguf_value_type_name(GgufValueType t);  // "uint32", "string", "array", ...

// One metadata value. Scalars: integers (and bools) in `integer` (a uint64 above INT64_MAX keeps its
// bit pattern; `type` tells), floats in `real`, strings in `string`. Arrays: `elem_type` and the
// elements in the vector of their kind (`strings`, `integers`, `reals`, or `arrays` when nested).
struct GgufValue {
  GgufValueType type = GgufValueType::UInt8;
  int64_t integer = 0;
  double real = 0;
  std::string string;
  GgufValueType elem_type = GgufValueType::UInt8;
  std::vector<std::string> strings;
  std::vector<int64_t> integers;
  std::vector<double> reals;
  std::vector<GgufValue> arrays;

  bool is_integer() const;  // any integer type (not bool)
  bool is_float() const { return type == GgufValueType::Float32 || type == GgufValueType::Float64; }
  uint64_t array_size() const;
  std::string describe() const;  // "uint32 7", "string 'llama'", "array of 49152 string", for messages
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] varies fastest
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;        // bytes from the start of the data section
  uint64_t bytes = 0;
  int64_t elements = 0;
  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }  // LibTorch order
};

class GgufFile {
 public:
  // Maps `path` and validates it. Throws kvlab::Error naming the file and the field at fault.
  explicit GgufFile(const std::string& path);
  // The same from bytes in memory (tests, fuzzing); `name` stands for the file in messages.
  static std::unique_ptr<GgufFile> from_bytes(std::string bytes, const std::string& name = "<memory>");
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  uint64_t file_size() const;
  // The header, metadata and tensor infos as stored: the bytes [0, data_offset()).
  std::string_view header_bytes() const;

  // ---- metadata, in file order
  const std::vector<std::string>& keys() const { return keys_; }
  bool has(const std::string& key) const { return metadata_.count(key) > 0; }
  const GgufValue* find(const std::string& key) const;
  const GgufValue& value(const std::string& key) const;  // throws: missing key
  // Typed getters: a missing key or another type is an error naming the file and the key.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;     // any integer type that fits int64
  double get_float(const std::string& key) const;    // float32/64 (or an integer)
  bool get_bool(const std::string& key) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;  // array of string
  const std::vector<int64_t>& get_ints(const std::string& key) const;         // array of integers
  const std::vector<double>& get_floats(const std::string& key) const;        // array of floats
  // "<file>: metadata key '<key>': <what>"
  [[noreturn]] void fail_key(const std::string& key, const std::string& what) const;

  // ---- tensors, in file order
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // throws: no such tensor
  const uint8_t* data(const GgufTensorInfo& t) const;           // into the mapping
  // The tensor dequantized into a new CPU tensor of LibTorch shape and `dtype` (threaded). A type
  // kvlab cannot dequantize is an error naming the tensor and the type.
  at::Tensor load(const GgufTensorInfo& t, c10::ScalarType dtype = c10::kFloat) const;
  at::Tensor load(const std::string& name, c10::ScalarType dtype = c10::kFloat) const {
    return load(tensor(name), dtype);
  }

 private:
  struct Source;
  GgufFile(std::shared_ptr<Source> source, std::string path);
  void parse();

  std::string path_;
  std::shared_ptr<Source> source_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// True when the path names a GGUF file (a regular file whose first four bytes are "GGUF").
bool is_gguf_file(const std::string& path);
// The same, and the name of what every --model accepts besides a checkpoint folder.
bool is_gguf_path(const std::string& path);

}  // namespace kvlab
