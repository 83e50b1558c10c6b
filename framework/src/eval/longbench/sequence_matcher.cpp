// difflib.SequenceMatcher(None, a, b).ratio() and fuzzywuzzy's fuzz.ratio on top of it, as the
// LongBench code-similarity metric uses them (published scores use this pure-Python back end).
// Strings are compared as code points, like Python str. The matching follows difflib step by step,
// because which block is found first decides the rest: the longest match in a range, earliest in
// a and then in b on ties, found only through non-popular elements of b and then extended over
// equal elements on both sides; then the same for the ranges left and right of it.
#include <cmath>
#include <unordered_map>
#include <vector>

#include "kvlab/eval/longbench/metrics.h"
#include "python_text.h"

namespace kvlab::longbench {
namespace {

using pytext::Text;

class SequenceMatcher {
 public:
  SequenceMatcher(const Text& a, const Text& b) : a_(a), b_(b) {
    for (size_t j = 0; j < b.size(); ++j) b2j_[b[j]].push_back(static_cast<int64_t>(j));
    // autojunk: in a b of 200+ elements, those occurring more than 1 + len(b) / 100 times are
    // "popular" and cannot seed a match.
    if (b.size() >= 200) {
      const size_t ntest = b.size() / 100 + 1;
      for (auto it = b2j_.begin(); it != b2j_.end();)
        it = it->second.size() > ntest ? b2j_.erase(it) : std::next(it);
    }
  }

  // Sum of the sizes of the matching blocks.
  int64_t matches() const {
    int64_t total = 0;
    std::vector<Range> queue{{0, static_cast<int64_t>(a_.size()), 0, static_cast<int64_t>(b_.size())}};
    while (!queue.empty()) {
      const Range r = queue.back();
      queue.pop_back();
      const Match m = longest_match(r);
      if (m.size == 0) continue;
      total += m.size;
      if (r.alo < m.i && r.blo < m.j) queue.push_back({r.alo, m.i, r.blo, m.j});
      if (m.i + m.size < r.ahi && m.j + m.size < r.bhi) queue.push_back({m.i + m.size, r.ahi, m.j + m.size, r.bhi});
    }
    return total;
  }

 private:
  struct Range {
    int64_t alo, ahi, blo, bhi;
  };
  struct Match {
    int64_t i, j, size;
  };

  Match longest_match(const Range& r) const {
    int64_t besti = r.alo, bestj = r.blo, bestsize = 0;
    // j2len[j + 1]: length of the match ending at a[i - 1] and b[j] (previous row), 0 elsewhere.
    std::unordered_map<int64_t, int64_t> j2len, next;
    for (int64_t i = r.alo; i < r.ahi; ++i) {
      next.clear();
      auto it = b2j_.find(a_[static_cast<size_t>(i)]);
      if (it != b2j_.end()) {
        for (int64_t j : it->second) {
          if (j < r.blo) continue;
          if (j >= r.bhi) break;
          auto prev = j2len.find(j - 1);
          const int64_t k = (prev == j2len.end() ? 0 : prev->second) + 1;
          next[j] = k;
          if (k > bestsize) besti = i - k + 1, bestj = j - k + 1, bestsize = k;
        }
      }
      std::swap(j2len, next);
    }
    // No element is junk (isjunk is None), so extending over equal neighbours takes popular ones too.
    while (besti > r.alo && bestj > r.blo && a_[besti - 1] == b_[bestj - 1]) --besti, --bestj, ++bestsize;
    while (besti + bestsize < r.ahi && bestj + bestsize < r.bhi && a_[besti + bestsize] == b_[bestj + bestsize])
      ++bestsize;
    return {besti, bestj, bestsize};
  }

  const Text& a_;
  const Text& b_;
  std::unordered_map<char32_t, std::vector<int64_t>> b2j_;  // element -> its positions in b, ascending
};

}  // namespace

double sequence_matcher_ratio(const std::string& a, const std::string& b) {
  const Text ta = pytext::decode(a), tb = pytext::decode(b);
  const size_t length = ta.size() + tb.size();
  if (length == 0) return 1.0;
  return 2.0 * static_cast<double>(SequenceMatcher(ta, tb).matches()) / static_cast<double>(length);
}

int fuzz_ratio(const std::string& a, const std::string& b) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  // Python's round() on a float: nearest integer, ties to even (the default rounding mode).
  return static_cast<int>(std::nearbyint(100 * sequence_matcher_ratio(a, b)));
}

}  // namespace kvlab::longbench
