// Safetensors reader (mmap, fully validated) and atomic writer. See kvlab/model/safetensors.h.
#include "kvlab/model/safetensors.h"

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
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"

// The data section is little-endian; we hand it to ATen without byte swapping.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kvlab's safetensors support assumes a little-endian host"
#endif

namespace kvlab {
namespace {

using ordered_json = nlohmann::ordered_json;
namespace fs = std::filesystem;

// Same cap as the reference implementation: a larger header is garbage, not a checkpoint.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Quotes a string taken from a file or a caller for an error message: control characters are
// escaped so that the message stays on one line.
std::string quote(const std::string& s) {
  std::string out = "'";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

// A JSON value for an error message: one line (dump escapes control characters), bounded length.
template <typename Json>
std::string brief(const Json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

std::string one_line(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

// Element size of a dtype kvlab reads, 0 for any other name.
size_t element_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 0;
}

bool is_known_dtype(const std::string& dtype) {
  static const std::set<std::string> known = {
      "BOOL", "U8",  "I8",  "I16", "U16",     "I32",     "U32",     "I64",     "U64",     "F16",
      "BF16", "F32", "F64", "C64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",      "F6_E2M3", "F6_E3M2"};
  return known.count(dtype) > 0;
}

at::ScalarType scalar_type(const std::string& dtype) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  return at::kBFloat16;  // the only other dtype validation lets through
}

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// --- header parsing -------------------------------------------------------------------------

// A non-negative JSON integer that fits `limit`; fails naming `what` otherwise.
uint64_t header_uint(const std::string& path, const std::string& name, const char* field, const ordered_json& v,
                     uint64_t limit) {
  if (!v.is_number_integer()) {
    fail("{}: tensor {} has a non-integer value {} in \"{}\"", path, quote(name), brief(v), field);
  }
  if (!v.is_number_unsigned()) {  // nlohmann stores non-negative literals as unsigned
    fail("{}: tensor {} has a negative value {} in \"{}\"{}", path, quote(name), brief(v), field,
         std::string(field) == "shape" ? " (negative dimension)" : "");
  }
  const uint64_t u = v.get<uint64_t>();
  if (u > limit) fail("{}: tensor {} has a too large value {} in \"{}\"", path, quote(name), u, field);
  return u;
}

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const ordered_json& info) {
  if (!info.is_object()) fail("{}: tensor {} is not a JSON object in the header: {}", path, quote(name), brief(info));
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!info.contains(field)) fail("{}: tensor {} has no \"{}\" in the header", path, quote(name), field);
  }
  SafetensorsEntry e;
  e.name = name;

  const ordered_json& dtype = info["dtype"];
  if (!dtype.is_string()) fail("{}: tensor {} has a non-string \"dtype\" {}", path, quote(name), brief(dtype));
  e.dtype = dtype.get<std::string>();
  if (element_size(e.dtype) == 0) {
    fail("{}: tensor {} has {} dtype {} (kvlab reads F32, F16 and BF16)", path, quote(name),
         is_known_dtype(e.dtype) ? "unsupported" : "unknown", quote(e.dtype));
  }

  const ordered_json& shape = info["shape"];
  if (!shape.is_array()) fail("{}: tensor {} has a non-array \"shape\" {}", path, quote(name), brief(shape));
  for (const ordered_json& d : shape) {
    const auto max_dim = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    e.shape.push_back(static_cast<int64_t>(header_uint(path, name, "shape", d, max_dim)));
  }

  const ordered_json& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    fail("{}: tensor {} has \"data_offsets\" {}, expected [begin, end]", path, quote(name), brief(offsets));
  }
  const uint64_t max_u64 = std::numeric_limits<uint64_t>::max();
  e.begin = header_uint(path, name, "data_offsets", offsets[0], max_u64);
  e.end = header_uint(path, name, "data_offsets", offsets[1], max_u64);
  if (e.begin > e.end) {
    fail("{}: tensor {} has data_offsets [{}, {}] with begin > end", path, quote(name), e.begin, e.end);
  }

  // Byte size must match the shape exactly; compute it without overflow.
  uint64_t bytes = element_size(e.dtype);
  for (int64_t d : e.shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
      fail("{}: tensor {} has shape {} whose byte size overflows", path, quote(name), shape_str(e.shape));
    }
  }
  if (e.end - e.begin != bytes) {
    fail("{}: tensor {} has a byte size mismatch: data_offsets [{}, {}] hold {} bytes, shape {} of dtype {} needs {}",
         path, quote(name), e.begin, e.end, e.end - e.begin, shape_str(e.shape), e.dtype, bytes);
  }
  return e;
}

// --- writing helpers --------------------------------------------------------------------------

void write_all(int fd, const void* data, size_t size, const std::string& tmp) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", tmp, std::strerror(errno));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    default: return "";
  }
}

}  // namespace

// --- SafetensorsFile ------------------------------------------------------------------------

// A read-only private mapping of the whole file. Tensors hold a shared_ptr to it, so the bytes
// stay valid until the last view is gone, even after the SafetensorsFile (or the file) is removed.
struct SafetensorsFile::Mapping {
  const uint8_t* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr) ::munmap(const_cast<uint8_t*>(data), size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), mapping_(std::make_shared<Mapping>()) {
  check_input_file(path, "safetensors file");
  // O_NONBLOCK: a FIFO swapped in after the check must not block the open (fstat refuses it below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("{}: cannot open safetensors file: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("{}: cannot stat safetensors file: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file{}", path, S_ISDIR(st.st_mode) ? " (a directory)" : "");
  }
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size > 0) {  // mmap of length 0 is an error; an empty file is reported as truncated below
    void* addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail("{}: mmap failed: {}", path, std::strerror(err));
    }
    mapping_->data = static_cast<const uint8_t*>(addr);
    mapping_->size = file_size;
  }
  ::close(fd);  // the mapping keeps the file's pages reachable on its own

  if (file_size < 8) {
    fail("{}: truncated safetensors file: {} bytes, fewer than the 8-byte header length", path, file_size);
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | mapping_->data[i];
  if (header_len > file_size - 8) {
    fail("{}: header length {} exceeds the {} bytes after the length prefix (truncated file, or not safetensors)",
         path, header_len, file_size - 8);
  }
  if (header_len > kMaxHeaderBytes) {
    fail("{}: header length {} exceeds the limit of {} bytes", path, header_len, kMaxHeaderBytes);
  }
  data_start_ = 8 + header_len;
  const uint64_t data_size = file_size - data_start_;

  // Parse, catching duplicate top-level keys (plain parsing would keep only one of them silently).
  const char* hbegin = reinterpret_cast<const char*>(mapping_->data + 8);
  std::set<std::string> seen;
  std::string duplicate;
  bool has_duplicate = false;
  auto on_event = [&](int depth, ordered_json::parse_event_t event, ordered_json& parsed) {
    if (event == ordered_json::parse_event_t::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second &&
        !has_duplicate) {
      has_duplicate = true;
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  ordered_json header;
  try {
    header = ordered_json::parse(hbegin, hbegin + header_len, on_event);
  } catch (const ordered_json::exception& e) {
    fail("{}: header is not valid JSON: {}", path, one_line(e.what()));
  }
  if (!header.is_object()) fail("{}: header JSON is not an object: {}", path, brief(header));
  if (has_duplicate) fail("{}: header has a duplicate key {}", path, quote(duplicate));

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) fail("{}: \"__metadata__\" is not a JSON object: {}", path, brief(info));
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) {
          fail("{}: \"__metadata__\" value of key {} is not a string: {}", path, quote(key), brief(value));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    SafetensorsEntry e = parse_entry(path, name, info);
    if (e.end > data_size) {
      fail("{}: tensor {} has data_offsets [{}, {}] beyond the {}-byte data section (truncated file)", path,
           quote(name), e.begin, e.end, data_size);
    }
    index_[name] = entries_.size();
    entries_.push_back(std::move(e));
  }

  // Overlap check: sorted by begin, each tensor must start at or after the furthest end so far.
  std::vector<const SafetensorsEntry*> sorted;
  for (const auto& e : entries_) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  const SafetensorsEntry* furthest = nullptr;
  for (const SafetensorsEntry* e : sorted) {
    if (furthest != nullptr && e->begin < furthest->end) {
      fail("{}: tensors {} [{}, {}] and {} [{}, {}] overlap in the data section", path, quote(furthest->name),
           furthest->begin, furthest->end, quote(e->name), e->begin, e->end);
    }
    if (furthest == nullptr || e->end > furthest->end) furthest = e;
  }
}

SafetensorsFile::~SafetensorsFile() = default;

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: no tensor {}", path_, quote(name));
  return entries_[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const auto options = at::TensorOptions().dtype(scalar_type(e.dtype)).device(at::kCPU);
  const size_t esize = element_size(e.dtype);
  const uint8_t* ptr = mapping_->data + data_start_ + e.begin;
  if (e.end == e.begin) return at::empty(e.shape, options);
  if (reinterpret_cast<uintptr_t>(ptr) % esize != 0) {
    // Headers not padded to a multiple of the element size leave the data misaligned: copy.
    at::Tensor t = at::empty(e.shape, options);
    std::memcpy(t.data_ptr(), ptr, e.end - e.begin);
    return t;
  }
  // The mapping is PROT_READ: the view must be treated as read-only (clone() before writing).
  std::shared_ptr<Mapping> keep = mapping_;
  return at::from_blob(
      const_cast<uint8_t*>(ptr), e.shape, [keep](void*) mutable { keep.reset(); }, options);
}

void SafetensorsFile::release(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(mapping_->data + data_start_ + e.begin);
  const auto end = reinterpret_cast<uintptr_t>(mapping_->data + data_start_ + e.end);
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;  // whole pages inside
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

// --- SafetensorsCheckpoint ------------------------------------------------------------------

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(single, ec)) {  // a single file wins over an index, as in transformers
    files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
    for (const auto& e : files_[0]->entries()) where_[e.name] = 0;
    return;
  }
  if (!fs::exists(index_path, ec)) {
    fail("{}: no model.safetensors or model.safetensors.index.json in the checkpoint directory", dir);
  }

  const std::string ipath = index_path.string();
  check_input_file(ipath, "safetensors index", kMaxJsonFileBytes);
  std::ifstream in(ipath, std::ios::binary);
  if (!in) fail("{}: cannot read the safetensors index", ipath);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: index is not valid JSON: {}", ipath, one_line(e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    fail("{}: index has no \"weight_map\" object", ipath);
  }

  std::map<std::string, size_t> shard_ids;  // shard file name -> index into files_; opened once
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) {
      fail("{}: \"weight_map\" entry of tensor {} is not a string: {}", ipath, quote(name), brief(shard));
    }
    const std::string file = shard.get<std::string>();
    auto it = shard_ids.find(file);
    if (it == shard_ids.end()) {
      // A downloaded index names its shards: only relative paths that stay in the folder are read
      // (an absolute path or '..' could open any file on the machine).
      const fs::path rel = fs::path(file).lexically_normal();
      if (file.empty() || rel.is_absolute() || rel.has_root_name() || rel.has_root_directory() ||
          (!rel.empty() && *rel.begin() == ".."))
        fail("{}: shard {} (holding tensor {}) is outside the checkpoint folder; only files inside it are read", ipath,
             quote(file), quote(name));
      const fs::path shard_path = fs::path(dir) / file;
      if (!fs::is_regular_file(shard_path, ec)) {
        fail("{}: shard {} (holding tensor {}) does not exist: {}", ipath, quote(file), quote(name),
             shard_path.string());
      }
      it = shard_ids.emplace(file, files_.size()).first;
      files_.push_back(std::make_unique<SafetensorsFile>(shard_path.string()));
    }
    if (!files_[it->second]->contains(name)) {
      fail("{}: tensor {} is listed in the index but absent from its shard {}", ipath, quote(name),
           files_[it->second]->path());
    }
    where_[name] = it->second;
  }
}

bool SafetensorsCheckpoint::contains(const std::string& name) const { return where_.count(name) > 0; }

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;  // std::map keeps them sorted
}

const SafetensorsEntry& SafetensorsCheckpoint::entry(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: checkpoint has no tensor {}", dir_, quote(name));
  return files_[it->second]->entry(name);
}

at::Tensor SafetensorsCheckpoint::tensor(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: checkpoint has no tensor {}", dir_, quote(name));
  return files_[it->second]->tensor(name);
}

void SafetensorsCheckpoint::release(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: checkpoint has no tensor {}", dir_, quote(name));
  files_[it->second]->release(name);
}

// --- writer ---------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Validate everything and build the header before touching the file system.
  std::vector<at::Tensor> cpu;
  std::set<std::string> names;
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;  // first, like the reference writer
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail("{}: \"__metadata__\" is reserved and cannot name a tensor", path);
    if (!names.insert(name).second) fail("{}: duplicate tensor name {}", path, quote(name));
    if (!t.defined()) fail("{}: tensor {} is undefined", path, quote(name));
    const std::string dtype = dtype_name(t.scalar_type());
    if (dtype.empty()) {
      fail("{}: tensor {} has dtype {}; the safetensors writer supports F32, F16 and BF16", path, quote(name),
           std::string(c10::toString(t.scalar_type())));
    }
    at::Tensor c = t.to(at::kCPU).contiguous();
    const auto bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(std::move(c));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const ordered_json::exception& e) {  // e.g. a name that is not valid UTF-8
    fail("{}: cannot encode the header: {}", path, one_line(e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned

  uint8_t prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  // Write to "<path>.tmp", fsync, rename: readers see the old file or the new one, never half of one.
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create {}: {}", path, tmp, std::strerror(errno));
  try {
    write_all(fd, prefix, sizeof prefix, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (const at::Tensor& c : cpu) write_all(fd, c.data_ptr(), c.numel() * c.element_size(), tmp);
    if (::fsync(fd) != 0) fail("{}: fsync failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: close failed: {}", tmp, std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot rename {} into place: {}", path, tmp, std::strerror(err));
  }
  // Make the rename itself durable; best effort (some file systems refuse fsync on directories).
  fs::path parent = fs::path(path).parent_path();
  const int dfd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace kvlab
