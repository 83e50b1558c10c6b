#include "bpe_model.h"

#include <algorithm>
#include <functional>

#include <fmt/format.h>

#include "byte_level.h"

namespace kvlab::bpe {

void BpeModel::finish() {
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(std::string(1, static_cast<char>(b)));
    byte_ids_[b] = it == vocab.end() ? -1 : it->second;
    fallback_ids_[b].clear();
    if (byte_ids_[b] >= 0 || !byte_fallback) continue;
    // HF's BPE sees the word in the byte-level alphabet and falls back on that character's UTF-8
    // bytes, and only when every one of them has a <0xXX> token.
    for (char c : bytes_to_byte_level(std::string(1, static_cast<char>(b)))) {
      const auto fb = byte_fallback_tokens.find(fmt::format("<0x{:02X}>", static_cast<uint8_t>(c)));
      if (fb == byte_fallback_tokens.end()) {
        fallback_ids_[b].clear();
        break;
      }
      fallback_ids_[b].push_back(fb->second);
    }
  }
}

// Starts from single-byte tokens, then repeatedly applies the lowest-ranked merge present
// (leftmost on ties) until none applies, as HF's Word::merge_all does.
void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;          // -1 once merged into its left neighbour
    int32_t prev, next;  // neighbours in the linked list, -1 at the ends
  };
  struct Candidate {
    int32_t rank, pos, left, right, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;  // min-heap on (rank, pos)
  symbols.clear();
  heap.clear();

  const auto append = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1});
    if (n > 0) symbols[n - 1].next = n;
  };
  for (char c : word) {
    const auto b = static_cast<uint8_t>(c);
    if (byte_ids_[b] >= 0) {
      append(byte_ids_[b]);
    } else if (!fallback_ids_[b].empty()) {
      for (int32_t id : fallback_ids_[b]) append(id);
    } else if (unk_id >= 0) {
      if (!(fuse_unk && !symbols.empty() && symbols.back().id == unk_id)) append(unk_id);
    }
    // else: HF drops a byte it has no token for.
  }
  const auto push_candidate = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    const auto it = merges_.find(key(symbols[pos].id, symbols[next].id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, pos, symbols[pos].id, symbols[next].id, it->second.result});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_candidate(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.pos];
    // Skip candidates that earlier merges made stale.
    if (left.id != c.left || left.next < 0 || symbols[left.next].id != c.right) continue;
    Symbol& right = symbols[left.next];
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.pos;
    right.id = -1;
    if (left.prev >= 0) push_candidate(left.prev);
    push_candidate(c.pos);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() == 1 && byte_ids_[static_cast<uint8_t>(word[0])] >= 0) {
    out.push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  std::string key(word);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (const auto it = cache_.find(key); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  const auto whole = ignore_merges ? vocab.find(key) : vocab.end();
  if (whole != vocab.end()) {
    out.push_back(whole->second);  // Llama-3: a word that is a vocabulary entry is taken as is
  } else {
    merge_word(word, out);
  }
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();  // bounds memory on endless novel input
    cache_.emplace(std::move(key), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

}  // namespace kvlab::bpe
