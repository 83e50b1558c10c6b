#pragma once
// Builds GGUF files byte by byte for the reader's tests, straight from the format's definition
// (not through kvlab's reader): metadata entries and tensors go in as given, so a test can write
// exactly the defect it checks (a wrong count, a bad offset, a short file).
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace kvlab::test {

class GgufBuilder {
 public:
  // Little-endian encoders of the format's fields.
  static void u8(std::string& o, uint8_t v) { o.push_back(static_cast<char>(v)); }
  static void u32(std::string& o, uint32_t v) { o.append(reinterpret_cast<const char*>(&v), 4); }
  static void u64(std::string& o, uint64_t v) { o.append(reinterpret_cast<const char*>(&v), 8); }
  static void f32(std::string& o, float v) { o.append(reinterpret_cast<const char*>(&v), 4); }
  static void str(std::string& o, const std::string& s) {
    u64(o, s.size());
    o += s;
  }

  uint32_t version = 3;
  uint32_t alignment = 32;  // where tensor data is placed (the file says so only if set_alignment)

  // A metadata entry: the value type id and its encoded payload.
  void kv(const std::string& key, uint32_t type, const std::string& payload) { kvs_.push_back({key, type, payload}); }
  void kv_string(const std::string& key, const std::string& v) {
    std::string p;
    str(p, v);
    kv(key, 8, p);
  }
  void kv_u32(const std::string& key, uint32_t v) {
    std::string p;
    u32(p, v);
    kv(key, 4, p);
  }
  void kv_f32(const std::string& key, float v) {
    std::string p;
    f32(p, v);
    kv(key, 6, p);
  }
  void kv_bool(const std::string& key, bool v) { kv(key, 7, std::string(1, v ? 1 : 0)); }
  void kv_strings(const std::string& key, const std::vector<std::string>& v) {
    std::string p;
    u32(p, 8);
    u64(p, v.size());
    for (const auto& s : v) str(p, s);
    kv(key, 9, p);
  }
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v) {
    std::string p;
    u32(p, 5);
    u64(p, v.size());
    for (int32_t x : v) u32(p, static_cast<uint32_t>(x));
    kv(key, 9, p);
  }
  void kv_f32s(const std::string& key, const std::vector<float>& v) {
    std::string p;
    u32(p, 6);
    u64(p, v.size());
    for (float x : v) f32(p, x);
    kv(key, 9, p);
  }

  // A tensor: dims in GGUF order (dims[0] fastest), ggml type, data bytes. The offset is the next
  // aligned one unless given.
  void tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, std::string data,
              int64_t offset = -1) {
    tensors_.push_back({name, std::move(dims), type, std::move(data), offset});
  }
  void tensor_f32(const std::string& name, std::vector<uint64_t> dims, const std::vector<float>& values) {
    std::string d;
    for (float v : values) f32(d, v);
    tensor(name, std::move(dims), 0, d);
  }

  std::string bytes() const {
    std::string o;
    u32(o, 0x46554747);
    u32(o, version);
    u64(o, tensors_.size());
    u64(o, kvs_.size());
    for (const auto& e : kvs_) {
      str(o, e.key);
      u32(o, e.type);
      o += e.payload;
    }
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const auto& t : tensors_) {
      const uint64_t off = t.offset >= 0 ? static_cast<uint64_t>(t.offset) : next;
      offsets.push_back(off);
      next = round_up(std::max(next, off + t.data.size()));
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      str(o, t.name);
      u32(o, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) u64(o, d);
      u32(o, t.type);
      u64(o, offsets[i]);
    }
    o.resize(round_up(o.size()), '\0');
    const size_t data_start = o.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (o.size() < data_start + offsets[i] + tensors_[i].data.size())
        o.resize(data_start + offsets[i] + tensors_[i].data.size(), '\0');
      std::memcpy(&o[data_start + offsets[i]], tensors_[i].data.data(), tensors_[i].data.size());
    }
    return o;
  }

  void write(const std::string& path) const {
    std::ofstream out(path, std::ios::binary);
    const std::string b = bytes();
    out.write(b.data(), static_cast<std::streamsize>(b.size()));
  }

 private:
  uint64_t round_up(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }
  struct Kv {
    std::string key;
    uint32_t type;
    std::string payload;
  };
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::string data;
    int64_t offset;
  };
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
};

}  // namespace kvlab::test
