#pragma once
// SHA-256 (FIPS 180-4), for identities that must be stable across runs and machines: experiment
// cell ids, model fingerprints, calibration cache keys.
#include <cstdint>
#include <string>
#include <string_view>

namespace kvlab {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::string hex();  // 64 lowercase hex digits; finishes the hash (call once)

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;  // bytes hashed
};

std::string sha256_hex(std::string_view data);

// A cheap fingerprint of a possibly huge file: its size, its first and last MiB. Enough to tell
// apart checkpoints (different seeds or training steps change every byte) without reading 13 GB.
// Throws naming the file when it cannot be read.
std::string file_fingerprint(const std::string& path);

}  // namespace kvlab
