// GGUF reader (mmap, fully validated on open). See kvlab/model/gguf_file.h.
#include "kvlab/model/gguf_file.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kvlab's GGUF support assumes a little-endian host"
#endif

namespace kvlab {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;      // arrays of arrays: deeper is garbage, not a model

// A string from the file for a message: control bytes escaped, long ones cut, so it stays one line.
std::string quote(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 120; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out + (s.size() > 120 ? "...'" : "'");
}

// Smallest encoding of one value of a type: what an array of `count` such elements needs at least.
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::UInt8: case GgufValueType::Int8: case GgufValueType::Bool: return 1;
    case GgufValueType::UInt16: case GgufValueType::Int16: return 2;
    case GgufValueType::UInt32: case GgufValueType::Int32: case GgufValueType::Float32: return 4;
    case GgufValueType::UInt64: case GgufValueType::Int64: case GgufValueType::Float64: return 8;
    case GgufValueType::String: return 8;  // the length
    case GgufValueType::Array: return 12;  // element type + count
  }
  return 1;
}

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::Float64); }

// Reads little-endian fields from [data, data + size); every read is bounds-checked and a short
// read is an error naming `what` (the field being read).
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      fail("{}: truncated file: {} needs {} bytes at offset {}, only {} remain", file_, what, n, pos_, remaining());
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    if (n > remaining())
      fail("{}: {}: string length {} exceeds the {} bytes left in the file", file_, what, n, remaining());
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& file_;
};

int64_t read_integer(Cursor& c, GgufValueType t, const std::string& what) {
  switch (t) {
    case GgufValueType::UInt8: return c.read<uint8_t>(what);
    case GgufValueType::Int8: return c.read<int8_t>(what);
    case GgufValueType::UInt16: return c.read<uint16_t>(what);
    case GgufValueType::Int16: return c.read<int16_t>(what);
    case GgufValueType::UInt32: return c.read<uint32_t>(what);
    case GgufValueType::Int32: return c.read<int32_t>(what);
    case GgufValueType::UInt64: return static_cast<int64_t>(c.read<uint64_t>(what));
    case GgufValueType::Int64: return c.read<int64_t>(what);
    default: return 0;
  }
}

bool is_integer_type(GgufValueType t) {
  return t == GgufValueType::UInt8 || t == GgufValueType::Int8 || t == GgufValueType::UInt16 ||
         t == GgufValueType::Int16 || t == GgufValueType::UInt32 || t == GgufValueType::Int32 ||
         t == GgufValueType::UInt64 || t == GgufValueType::Int64;
}

GgufValue read_value(Cursor& c, GgufValueType type, const std::string& what, const std::string& file, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::Float32: v.real = c.read<float>(what); break;
    case GgufValueType::Float64: v.real = c.read<double>(what); break;
    case GgufValueType::Bool: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) fail("{}: {}: bool value {} (expected 0 or 1)", file, what, b);
      v.integer = b;
      break;
    }
    case GgufValueType::String: v.string = c.string(what); break;
    case GgufValueType::Array: {
      if (depth >= kMaxArrayNesting) fail("{}: {}: arrays nested deeper than {}", file, what, kMaxArrayNesting);
      const uint32_t et = c.read<uint32_t>(what + " element type");
      if (!valid_value_type(et)) fail("{}: {}: unknown array element type {}", file, what, et);
      v.elem_type = static_cast<GgufValueType>(et);
      const uint64_t n = c.read<uint64_t>(what + " element count");
      // Checked against what is left before anything is reserved.
      if (n > c.remaining() / min_value_bytes(v.elem_type))
        fail("{}: {}: array of {} {} elements cannot fit in the {} bytes left in the file", file, what, n,
             gguf_value_type_name(v.elem_type), c.remaining());
      const size_t count = static_cast<size_t>(n);
      if (v.elem_type == GgufValueType::String) {
        v.strings.reserve(count);
        for (size_t i = 0; i < count; ++i) v.strings.push_back(c.string(fmt::format("{}[{}]", what, i)));
      } else if (v.elem_type == GgufValueType::Array) {
        v.arrays.reserve(count);
        for (size_t i = 0; i < count; ++i)
          v.arrays.push_back(read_value(c, GgufValueType::Array, fmt::format("{}[{}]", what, i), file, depth + 1));
      } else if (v.elem_type == GgufValueType::Float32 || v.elem_type == GgufValueType::Float64) {
        v.reals.resize(count);
        for (size_t i = 0; i < count; ++i)
          v.reals[i] = v.elem_type == GgufValueType::Float32 ? c.read<float>(what) : c.read<double>(what);
      } else {
        v.integers.resize(count);
        for (size_t i = 0; i < count; ++i) {
          if (v.elem_type == GgufValueType::Bool) {
            const uint8_t b = c.read<uint8_t>(what);
            if (b > 1) fail("{}: {}[{}]: bool value {} (expected 0 or 1)", file, what, i, b);
            v.integers[i] = b;
          } else {
            v.integers[i] = read_integer(c, v.elem_type, what);
          }
        }
      }
      break;
    }
    default: v.integer = read_integer(c, type, what); break;
  }
  return v;
}

}  // namespace

std::string gguf_value_type_name(GgufValueType t) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16", "uint32", "int32", "float32",
                                "bool",  "string", "array",  "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : fmt::format("type {}", i);
}

bool GgufValue::is_integer() const { return is_integer_type(type); }

uint64_t GgufValue::array_size() const {
  return strings.size() + integers.size() + reals.size() + arrays.size();
}

std::string GgufValue::describe() const {
  switch (type) {
    case GgufValueType::String: return "string " + quote(string);
    case GgufValueType::Array: return fmt::format("array of {} {}", array_size(), gguf_value_type_name(elem_type));
    case GgufValueType::Bool: return integer ? "bool true" : "bool false";
    case GgufValueType::Float32: case GgufValueType::Float64:
      return fmt::format("{} {}", gguf_value_type_name(type), real);
    case GgufValueType::UInt64: return fmt::format("uint64 {}", static_cast<uint64_t>(integer));
    default: return fmt::format("{} {}", gguf_value_type_name(type), integer);
  }
}

// ---------------------------------------------------------------------------------------------
// The bytes behind a file: a read-only mapping, or a string owned in memory.

struct GgufFile::Source {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  bool mapped = false;
  std::string owned;
  ~Source() {
    if (mapped && data != nullptr) ::munmap(const_cast<uint8_t*>(data), size);
  }
};

GgufFile::GgufFile(const std::string& path) : path_(path), source_(std::make_shared<Source>()) {
  check_input_file(path, "GGUF file");  // before open(): a FIFO would block it
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open GGUF file: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail("{}: mmap failed: {}", path, std::strerror(err));
    }
    source_->data = static_cast<const uint8_t*>(addr);
    source_->size = size;
    source_->mapped = true;
  }
  ::close(fd);
  parse();
}

GgufFile::GgufFile(std::shared_ptr<Source> source, std::string path)
    : path_(std::move(path)), source_(std::move(source)) {
  parse();
}

std::unique_ptr<GgufFile> GgufFile::from_bytes(std::string bytes, const std::string& name) {
  auto src = std::make_shared<Source>();
  src->owned = std::move(bytes);
  src->data = reinterpret_cast<const uint8_t*>(src->owned.data());
  src->size = src->owned.size();
  return std::unique_ptr<GgufFile>(new GgufFile(std::move(src), name));
}

GgufFile::~GgufFile() = default;

uint64_t GgufFile::file_size() const { return source_->size; }

std::string_view GgufFile::header_bytes() const {
  return {reinterpret_cast<const char*>(source_->data), static_cast<size_t>(std::min(data_offset_, source_->size))};
}

void GgufFile::parse() {
  const std::string& file = path_;
  Cursor c(source_->data, source_->size, file);
  if (source_->size < 4 || c.read<uint32_t>("magic") != kMagic)
    fail("{}: not a GGUF file (bad magic: expected the bytes 'GGUF')", file);
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    if (version_ == 1) fail("{}: GGUF version 1 is not supported (only versions 2 and 3)", file);
    if ((version_ & 0xFFFF) == 0)
      fail("{}: unsupported GGUF version {} (a big-endian file? only little-endian versions 2 and 3 are read)", file,
           version_);
    fail("{}: unsupported GGUF version {} (supported: 2, 3)", file, version_);
  }
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // The smallest metadata entry is 13 bytes (empty key, type, one byte); a tensor info 24.
  if (n_kv > c.remaining() / 13)
    fail("{}: metadata count {} cannot fit in the {} bytes of the file", file, n_kv, source_->size);
  if (n_tensors > c.remaining() / 24)
    fail("{}: tensor count {} cannot fit in the {} bytes of the file", file, n_tensors, source_->size);

  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.string(fmt::format("metadata key #{}", i));
    const std::string what = "metadata key " + quote(key);
    const uint32_t type = c.read<uint32_t>(what + " value type");
    if (!valid_value_type(type)) fail("{}: {}: unknown value type {}", file, what, type);
    GgufValue v = read_value(c, static_cast<GgufValueType>(type), what, file, 0);
    if (metadata_.count(key)) fail("{}: duplicate metadata key {}", file, quote(key));
    keys_.push_back(key);
    metadata_.emplace(key, std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufValueType::UInt32) fail_key("general.alignment", "expected uint32, got " + a->describe());
    const uint64_t al = static_cast<uint64_t>(a->integer);
    if (al == 0 || (al & (al - 1)) != 0) fail_key("general.alignment", fmt::format("{} is not a power of two", al));
    alignment_ = al;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.string(fmt::format("tensor #{} name", i));
    const std::string what = "tensor " + quote(t.name);
    if (tensor_index_.count(t.name)) fail("{}: duplicate tensor name {}", file, quote(t.name));
    const uint32_t n_dims = c.read<uint32_t>(what + " dimension count");
    if (n_dims > kMaxDims) fail("{}: {}: {} dimensions (at most {})", file, what, n_dims, kMaxDims);
    // `extent` counts a zero dimension as one: a tensor with no elements still gets strides (the
    // products of the other dimensions), and those must not overflow either (fuzz_gguf: shape
    // [1.6e9, 1e17, 2.2e12, 0] passed as zero elements, then overflowed in the tensor's storage size).
    int64_t elements = 1, extent = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.read<uint64_t>(what + " dimensions");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(elements, static_cast<int64_t>(dim), &elements) ||
          __builtin_mul_overflow(extent, std::max<int64_t>(1, static_cast<int64_t>(dim)), &extent) ||
          extent > std::numeric_limits<int64_t>::max() / 8)  // the size in bytes of a tensor of doubles
        fail("{}: {}: the element count overflows (dimension {} = {})", file, what, d, dim);
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    t.elements = elements;
    const uint32_t type = c.read<uint32_t>(what + " type");
    const auto info = ggml_type_info(type);
    if (!info) fail("{}: {}: unknown ggml type {}", file, what, type);
    t.type = info->type;
    t.offset = c.read<uint64_t>(what + " data offset");
    const int64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % info->block != 0)
      fail("{}: {}: row length {} is not a multiple of the {} block size {}", file, what, row, info->name,
           info->block);
    // elements / block * bytes cannot overflow for block >= 1 and bytes <= 292 unless the element
    // count is near 2^63; check anyway.
    const uint64_t blocks = static_cast<uint64_t>(elements / info->block);
    if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(info->bytes), &t.bytes))
      fail("{}: {}: the byte size overflows", file, what);
    if (t.offset % alignment_ != 0)
      fail("{}: {}: data offset {} is not a multiple of the alignment {}", file, what, t.offset, alignment_);
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t end = c.pos();
  data_offset_ = end + (alignment_ - end % alignment_) % alignment_;
  const uint64_t data_size = data_offset_ <= source_->size ? source_->size - data_offset_ : 0;
  if (!tensors_.empty() && data_offset_ > source_->size)
    fail("{}: truncated file: the data section would start at offset {}, past the end ({} bytes)", file,
         data_offset_, source_->size);
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      fail("{}: tensor {}: data [{}, {}) runs past the end of the data section ({} bytes; truncated file?)", file,
           quote(t.name), t.offset, t.offset + t.bytes, data_size);
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& a = *by_offset[i - 1];
    const GgufTensorInfo& b = *by_offset[i];
    if (b.offset < a.offset + a.bytes)
      fail("{}: tensor {}: data [{}, {}) overlaps tensor {} [{}, {})", file, quote(b.name), b.offset,
           b.offset + b.bytes, quote(a.name), a.offset, a.offset + a.bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// Metadata access

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

void GgufFile::fail_key(const std::string& key, const std::string& what) const {
  fail("{}: metadata key {}: {}", path_, quote(key), what);
}

const GgufValue& GgufFile::value(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail("{}: missing metadata key {}", path_, quote(key));
  return *v;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufValueType::String) fail_key(key, "expected a string, got " + v.describe());
  return v.string;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = value(key);
  if (!v.is_integer()) fail_key(key, "expected an integer, got " + v.describe());
  if (v.type == GgufValueType::UInt64 && v.integer < 0) fail_key(key, "value " + v.describe() + " is too large");
  return v.integer;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.is_float()) return v.real;
  if (v.is_integer()) return static_cast<double>(v.integer);
  fail_key(key, "expected a number, got " + v.describe());
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufValueType::Bool) fail_key(key, "expected a bool, got " + v.describe());
  return v.integer != 0;
}

const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufValueType::Array || v.elem_type != GgufValueType::String)
    fail_key(key, "expected an array of strings, got " + v.describe());
  return v.strings;
}

const std::vector<int64_t>& GgufFile::get_ints(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufValueType::Array || !is_integer_type(v.elem_type))
    fail_key(key, "expected an array of integers, got " + v.describe());
  return v.integers;
}

const std::vector<double>& GgufFile::get_floats(const std::string& key) const {
  const GgufValue& v = value(key);
  if (v.type != GgufValueType::Array || (v.elem_type != GgufValueType::Float32 && v.elem_type != GgufValueType::Float64))
    fail_key(key, "expected an array of floats, got " + v.describe());
  return v.reals;
}

// ---------------------------------------------------------------------------------------------
// Tensors

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) fail("{}: no tensor {}", path_, quote(name));
  return *t;
}

const uint8_t* GgufFile::data(const GgufTensorInfo& t) const { return source_->data + data_offset_ + t.offset; }

at::Tensor GgufFile::load(const GgufTensorInfo& t, c10::ScalarType dtype) const {
  const auto info = ggml_type_info(static_cast<uint32_t>(t.type));
  if (!info || !info->dequantizable)
    fail("{}: tensor {} has type {}, which kvlab cannot dequantize (supported: {})", path_, quote(t.name),
         ggml_type_name(t.type), dequantizable_type_names());
  const auto shape = t.shape();
  if (dtype == c10::kFloat) {  // straight into the result
    at::Tensor out = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
    dequantize_to_f32(t.type, data(t), out.data_ptr<float>(), t.elements);
    return out;
  }
  // Half-precision results from half-precision data need no rounding: copy the bits.
  if ((t.type == GgmlType::F16 && dtype == c10::kHalf) || (t.type == GgmlType::BF16 && dtype == c10::kBFloat16)) {
    at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
    std::memcpy(out.data_ptr(), data(t), t.bytes);
    return out;
  }
  at::Tensor f32 = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  dequantize_to_f32(t.type, data(t), f32.data_ptr<float>(), t.elements);
  return f32.to(dtype);
}

bool is_gguf_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in && in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

bool is_gguf_path(const std::string& path) {
  return std::filesystem::is_regular_file(path) && is_gguf_file(path);
}

}  // namespace kvlab
