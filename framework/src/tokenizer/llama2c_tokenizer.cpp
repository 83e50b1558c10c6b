#include "kvlab/tokenizer/llama2c_tokenizer.h"

#include <cstring>
#include <fstream>
#include <queue>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"

namespace kvlab {
namespace {

constexpr int32_t kByteOffset = 3;  // id of byte 0x00

size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;  // a stray continuation or invalid byte stands alone (and falls back to its byte)
}

}  // namespace

Llama2cTokenizer::Llama2cTokenizer(const std::string& path, int32_t vocab_size) : path_(path) {
  check_input_file(path, "llama2.c tokenizer", kMaxTokenizerFileBytes);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open llama2.c tokenizer", path);
  int32_t max_len = 0;
  if (!in.read(reinterpret_cast<char*>(&max_len), 4) || max_len <= 0 || max_len > 1 << 16)
    fail("{}: not a llama2.c tokenizer (bad max_token_length header)", path);
  while (vocab_size <= 0 || static_cast<int32_t>(v_.pieces.size()) < vocab_size) {
    float score = 0;
    int32_t len = 0;
    if (!in.read(reinterpret_cast<char*>(&score), 4)) {
      if (vocab_size <= 0 && in.eof()) break;
      fail("{}: truncated after {} tokens (expected {})", path, v_.pieces.size(), vocab_size);
    }
    if (!in.read(reinterpret_cast<char*>(&len), 4) || len < 0 || len > max_len)
      fail("{}: token {} has a bad length (truncated or corrupt file)", path, v_.pieces.size());
    std::string piece(static_cast<size_t>(len), '\0');
    if (!in.read(piece.data(), len)) fail("{}: truncated inside token {}", path, v_.pieces.size());
    v_.pieces.push_back(std::move(piece));
    v_.scores.push_back(score);
  }
  if (v_.pieces.size() < static_cast<size_t>(kByteOffset + 256))
    fail("{}: {} tokens, fewer than the 259 of the special and byte-fallback ids", path, v_.pieces.size());
  if (vocab_size > 0 && in.peek() != std::char_traits<char>::eof())
    fail("{}: more tokens than the model's vocab_size {}", path, vocab_size);
  // llama2.c's fixed layout: <unk>, <s>, </s>, then the 256 bytes.
  for (int b = 0; b < 256; ++b) v_.byte_ids[b] = kByteOffset + b;
  v_.control.assign(v_.pieces.size(), 0);
  v_.control[0] = v_.control[1] = v_.control[2] = 1;
  v_.bos = 1;
  v_.eos = 2;
  index();
}

Llama2cTokenizer::Llama2cTokenizer(ScoredVocabulary vocab, std::string source)
    : path_(std::move(source)), v_(std::move(vocab)) {
  if (v_.scores.size() != v_.pieces.size())
    fail("{}: {} scores for {} tokens", path_, v_.scores.size(), v_.pieces.size());
  v_.control.resize(v_.pieces.size(), 0);
  for (int32_t id : v_.byte_ids)
    if (id >= vocab_size()) fail("{}: byte-fallback id {} outside the vocabulary ({} tokens)", path_, id, vocab_size());
  index();
}

void Llama2cTokenizer::index() {
  byte_of_.assign(v_.pieces.size(), -1);
  for (int b = 0; b < 256; ++b)
    if (v_.byte_ids[b] >= 0) byte_of_[static_cast<size_t>(v_.byte_ids[b])] = static_cast<int16_t>(b);
  // Control and byte pieces are never matched in text nor made by merges.
  for (size_t id = 0; id < v_.pieces.size(); ++id)
    if (!v_.control[id] && byte_of_[id] < 0) ids_.emplace(v_.pieces[id], static_cast<int32_t>(id));
}

std::vector<int32_t> Llama2cTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  if (add_special && v_.add_bos && v_.bos) ids.push_back(*v_.bos);
  if (text.empty()) return ids;
  std::vector<int32_t> work;
  // The dummy prefix: a leading space, as SentencePiece adds.
  if (v_.add_space_prefix) {
    auto space = ids_.find(" ");
    if (space != ids_.end()) work.push_back(space->second);
  }
  for (size_t i = 0; i < text.size();) {
    const size_t n = std::min(utf8_length(static_cast<unsigned char>(text[i])), text.size() - i);
    auto it = ids_.find(std::string(text.substr(i, n)));
    if (it != ids_.end()) {
      work.push_back(it->second);
    } else {
      for (size_t b = 0; b < n; ++b) {
        const int32_t id = v_.byte_ids[static_cast<unsigned char>(text[i + b])];
        if (id < 0) fail("{}: no token for byte 0x{:02X} (the vocabulary has no byte fallback)", path_,
                         static_cast<unsigned char>(text[i + b]));
        work.push_back(id);
      }
    }
    i += n;
  }
  // Merge the best-scoring adjacent pair until none merges, the leftmost winning a tie (llama2.c's
  // rule). A heap of candidate pairs over a linked list makes this O(n log n) instead of O(n^2),
  // which matters for whole-file perplexity texts; stale candidates are skipped when popped.
  const size_t n = work.size();
  std::vector<int64_t> prev(n), next(n);
  std::vector<uint32_t> version(n, 0);
  for (size_t i = 0; i < n; ++i) prev[i] = static_cast<int64_t>(i) - 1, next[i] = i + 1 < n ? i + 1 : -1;
  struct Candidate {
    float score;
    int64_t left, right;
    int32_t id;
    uint32_t vl, vr;
    bool operator<(const Candidate& o) const {  // max-heap: higher score first, then leftmost
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Candidate> heap;
  std::string merged;
  auto consider = [&](int64_t l) {
    if (l < 0 || next[l] < 0) return;
    const int64_t r = next[l];
    merged = v_.pieces[static_cast<size_t>(work[l])];
    merged += v_.pieces[static_cast<size_t>(work[r])];
    auto it = ids_.find(merged);
    if (it != ids_.end())
      heap.push({v_.scores[static_cast<size_t>(it->second)], l, r, it->second, version[l], version[r]});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int64_t>(i));
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (next[c.left] != c.right || version[c.left] != c.vl || version[c.right] != c.vr) continue;  // stale
    work[c.left] = c.id;
    ++version[c.left];
    version[c.right] = ~0u;  // removed
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    consider(prev[c.left]);
    consider(c.left);
  }
  std::vector<int32_t> out;
  out.reserve(n);
  for (int64_t i = n ? 0 : -1; i >= 0; i = next[i]) out.push_back(work[i]);
  work.swap(out);
  ids.insert(ids.end(), work.begin(), work.end());
  if (add_special && v_.add_eos && v_.eos) ids.push_back(*v_.eos);
  return ids;
}

std::string Llama2cTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  bool at_start = true;  // the dummy-prefix space of the first text piece is dropped
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail("{}: token id {} out of range [0, {})", path_, id, vocab_size());
    const std::string& p = v_.pieces[static_cast<size_t>(id)];
    if (v_.control[static_cast<size_t>(id)]) {  // <unk>, <s>, </s>, ...
      if (v_.bos && id == *v_.bos) at_start = true;
      if (!skip_special) out += p;
      continue;
    }
    const int byte = byte_of_[static_cast<size_t>(id)];
    if (byte >= 0) {
      out.push_back(static_cast<char>(byte));
    } else if (at_start && v_.add_space_prefix && !p.empty() && p[0] == ' ') {
      out.append(p, 1, std::string::npos);
    } else {
      out += p;
    }
    at_start = false;
  }
  return out;
}

}  // namespace kvlab
