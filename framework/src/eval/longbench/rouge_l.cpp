// ROUGE-L F as the Python `rouge` package (1.0.x) computes it for one hypothesis and one reference,
// which is what LongBench's rouge_score calls. Its quirks are part of the published numbers:
//   - sentences are the pieces of text.split('.') that are non-empty before white space is
//     collapsed, so a piece of spaces becomes a sentence of one empty word;
//   - words are split on ' ' only, and every count is over *sets* of words (exclusive mode):
//     m, n = distinct words of reference / hypothesis, and the LCS hits are the distinct words of
//     the union, over all sentence pairs, of the one LCS the package reconstructs;
//   - which LCS is reconstructed follows its back-tracking order (diagonal on a match, else up
//     only when strictly longer, else left);
//   - the reconstruction is recursive, so a path longer than Python's stack allows raises, and the
//     benchmark scores that 0.
#include <algorithm>
#include <cstddef>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kvlab/eval/longbench/metrics.h"
#include "python_text.h"

namespace kvlab::longbench {
namespace {

using pytext::Text;
using Sentence = std::vector<int>;  // word ids

std::vector<Text> package_sentences(const std::string& s) {
  std::vector<Text> out;
  for (const Text& piece : pytext::split(pytext::decode(s), U'.'))
    if (!piece.empty()) out.push_back(pytext::join(pytext::split_whitespace(piece), U" "));
  return out;
}

class WordIds {
 public:
  Sentence words(const Text& sentence) {
    Sentence out;
    for (const Text& w : pytext::split(sentence, U' ')) {
      auto it = ids_.emplace(w, static_cast<int>(ids_.size())).first;
      out.push_back(it->second);
    }
    return out;
  }

 private:
  std::unordered_map<Text, int> ids_;
};

// The words of the package's reconstructed LCS of x (reference) and y (hypothesis), added to
// `hits`. False if the recursive reconstruction would exceed Python's recursion limit.
//
// Memory: the walk back from (n, m) needs the table itself, not only the LCS length, because which
// LCS it reconstructs decides the words. But within the limit it takes fewer than
// W = kRougeMaxReconCalls steps, each lowering i and j by at most one, so it only reads rows >= n - W
// and columns >= m - W. The table is computed row by row in two rows of m + 1 (as the linear-memory
// LCS length is) and only that corner, at most (W + 1)^2 entries, is kept: O(m + W^2) memory instead
// of O(n m), the same walk. The walk takes at least min(n, m) steps, so when min(n, m) >= W the
// package fails and nothing needs computing.
bool add_lcs_words(const Sentence& x, const Sentence& y, std::unordered_set<int>& hits) {
  const size_t n = x.size(), m = y.size();
  const size_t limit = kRougeMaxReconCalls;
  if (std::min(n, m) + 1 > limit) return false;  // at least min(n, m) + 1 calls
  const size_t row0 = n > limit ? n - limit : 0, col0 = m > limit ? m - limit : 0;
  const size_t cols = m - col0 + 1;
  std::vector<int> corner((n - row0 + 1) * cols, 0);  // [n - row0 + 1, m - col0 + 1]: rows row0..n, cols col0..m
  std::vector<int> prev(m + 1, 0), row(m + 1, 0);     // [m + 1] LCS lengths of x[:i-1] / x[:i] and y[:j]
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j)
      row[j] = x[i - 1] == y[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], row[j - 1]);
    if (i >= row0)
      std::copy(row.begin() + static_cast<std::ptrdiff_t>(col0), row.end(),
                corner.begin() + static_cast<std::ptrdiff_t>((i - row0) * cols));
    std::swap(prev, row);
  }
  auto at = [&](size_t i, size_t j) { return corner[(i - row0) * cols + (j - col0)]; };

  std::vector<int> words;
  size_t i = n, j = m;
  size_t calls = 1;  // the package's _recon(i, j) calls along the path, the base case included
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      words.push_back(x[i - 1]);
      --i, --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
    if (++calls > limit) return false;  // so far fewer than `limit` steps: i, j stay in the corner
  }
  hits.insert(words.begin(), words.end());
  return true;
}

}  // namespace

std::optional<double> rouge_l_f(const std::string& hypothesis, const std::string& reference) {
  const auto hyp = package_sentences(hypothesis), ref = package_sentences(reference);
  if (hyp.empty() || ref.empty()) return std::nullopt;  // the package raises ValueError
  WordIds ids;
  std::vector<Sentence> hyp_words, ref_words;
  std::unordered_set<int> hyp_set, ref_set;
  for (const Text& s : hyp) {
    hyp_words.push_back(ids.words(s));
    hyp_set.insert(hyp_words.back().begin(), hyp_words.back().end());
  }
  for (const Text& s : ref) {
    ref_words.push_back(ids.words(s));
    ref_set.insert(ref_words.back().begin(), ref_words.back().end());
  }
  std::unordered_set<int> hits;
  for (const Sentence& r : ref_words)
    for (const Sentence& h : hyp_words)
      if (!add_lcs_words(r, h, hits)) return std::nullopt;  // RecursionError

  const double llcs = static_cast<double>(hits.size());
  const double r_lcs = llcs / static_cast<double>(ref_set.size());
  const double p_lcs = llcs / static_cast<double>(hyp_set.size());
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

double rouge_score(const std::string& prediction, const std::string& truth) {
  return rouge_l_f(prediction, truth).value_or(0.0);
}

}  // namespace kvlab::longbench
