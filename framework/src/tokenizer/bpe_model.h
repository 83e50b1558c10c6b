#pragma once
// The BPE model of a byte-level tokenizer.json ("model": {"type": "BPE", ...}): turns one
// pre-tokenized word, as raw bytes, into token ids by applying the ranked merges. Private to
// framework/src.
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvlab::bpe {

class BpeModel {
 public:
  // ---- filled by the loader, then finish() is called
  std::unordered_map<std::string, int32_t> vocab;  // byte-level entries, keyed by their raw bytes
  std::unordered_map<std::string, int32_t> byte_fallback_tokens;  // "<0xXX>" entries, if any
  bool ignore_merges = false;  // a word that is itself in the vocabulary is taken whole
  bool byte_fallback = false;
  bool fuse_unk = false;
  int32_t unk_id = -1;

  // Declares that merging tokens `left` and `right` gives `result`, with priority `rank` (lower
  // first). A pair declared again takes its last rank, as in HF.
  void add_merge(int32_t left, int32_t right, int32_t rank, int32_t result) {
    merges_[key(left, right)] = {rank, result};
  }
  void reserve_merges(size_t n) { merges_.reserve(n); }

  // Derives the per-byte lookups from the fields above.
  void finish();

  // Appends the ids of one non-empty word. Thread-safe; results of short words are cached.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  std::unordered_map<uint64_t, Merge> merges_;  // key(left, right) -> rank, result
  std::array<int32_t, 256> byte_ids_{};         // the single-byte token of each byte, or -1
  // For a byte missing from the vocabulary: its <0xXX> tokens with byte_fallback (HF falls back
  // on the UTF-8 bytes of the byte's alphabet character, e.g. "Ġ" -> <0xC4> <0xA0>), else empty.
  std::array<std::vector<int32_t>, 256> fallback_ids_;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // word -> ids
  static constexpr size_t kMaxCachedWordBytes = 128;
  static constexpr size_t kMaxCacheEntries = size_t{1} << 18;
};

}  // namespace kvlab::bpe
