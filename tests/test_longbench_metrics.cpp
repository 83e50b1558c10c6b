// LongBench's metrics on hand-computed examples (the fixtures in test_longbench_scorer.cpp check
// them against the benchmark's Python packages).
#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/metrics.h"

namespace kvlab::longbench {
namespace {

TEST(LongBenchMetrics, NormalizeAnswer) {
  EXPECT_EQ(normalize_answer("The Cat, a hat!"), "cat hat");
  EXPECT_EQ(normalize_answer("  An\tapple  THE\nend "), "apple end");
  EXPECT_EQ(normalize_answer("theatre anna a_b"), "theatre anna ab");  // only whole words; '_' is punctuation
  EXPECT_EQ(normalize_answer("\xc3\x89mile"), "\xc3\xa9mile");          // É lower-cases to é
  EXPECT_EQ(normalize_answer("caf\xc3\xa9 a"), "caf\xc3\xa9");          // é is a word character: "a" alone goes
  EXPECT_EQ(normalize_answer("\xce\xa3\xce\x91\xce\xa3"), "\xcf\x83\xce\xb1\xcf\x82");  // ΣΑΣ -> σας (final sigma)
  EXPECT_EQ(normalize_answer("New\xc2\xa0York"), "new york");           // no-break space splits
}

TEST(LongBenchMetrics, TokenF1) {
  // 2 shared of 3 predicted and 4 true: P 2/3, R 1/2, F1 = 2PR / (P + R) = 4/7.
  EXPECT_NEAR(token_f1({"a", "b", "c"}, {"b", "c", "d", "e"}), 4.0 / 7.0, 1e-15);
  EXPECT_EQ(token_f1({"a"}, {"b"}), 0.0);
  EXPECT_EQ(token_f1({}, {"b"}), 0.0);
  // Multiset: "x x y" vs "x z": one x shared. P 1/3, R 1/2, F1 = 2/5.
  EXPECT_NEAR(token_f1({"x", "x", "y"}, {"x", "z"}), 0.4, 1e-15);
  EXPECT_NEAR(qa_f1_score("the cat sat", "A cat."), 2.0 / 3.0, 1e-15);
  EXPECT_EQ(qa_f1_score("", "yes"), 0.0);
}

TEST(LongBenchMetrics, RougeL) {
  // One sentence each: LCS of [a c d e] and [a b c d] is "a c d"; P = R = 3/4.
  EXPECT_NEAR(*rouge_l_f("a b c d", "a c d e"), 0.75, 1e-8);
  // Two hypothesis sentences: LCS words {a} and {c} unite to 2 hits; m = 2, n = 4: R 1, P 1/2, F 2/3.
  EXPECT_NEAR(*rouge_l_f("a b. c d", "a c"), 2.0 / 3.0, 1e-8);
  // Words are counted as sets: n = |{the}| = 1, m = |{the, cat}| = 2, one hit: P 1, R 1/2.
  EXPECT_NEAR(*rouge_l_f("the the the", "the cat"), 2.0 / 3.0, 1e-8);
  // Case matters (no lower-casing in the package).
  EXPECT_NEAR(*rouge_l_f("The cat", "the cat"), 0.5, 1e-8);
  EXPECT_FALSE(rouge_l_f("", "a reference").has_value());
  EXPECT_FALSE(rouge_l_f("...", "a reference").has_value());
  EXPECT_EQ(rouge_score("", "a reference"), 0.0);
  // A hypothesis of n distinct words against a one-word reference that is its first word: the
  // reconstruction walks n + 1 calls; one call more than the limit allows fails.
  auto words = [](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += (i ? " w" : "w") + std::to_string(i);
    return s;
  };
  const int n = kRougeMaxReconCalls - 1;
  EXPECT_NEAR(*rouge_l_f(words(n), "w0"), 2.0 * ((1.0 / n) / (1.0 / n + 1.0 + 1e-8)), 1e-15);
  EXPECT_FALSE(rouge_l_f(words(n + 1), "w0").has_value());
}

// The package's summary-level ROUGE-L as written: the full LCS table of every sentence pair, its
// back-tracking walk, words counted as sets. Texts here are plain "w1 w2. w3" (no extra spaces).
std::optional<double> full_table_rouge_l(const std::string& hypothesis, const std::string& reference) {
  auto sentences = [](const std::string& text) {
    std::vector<std::vector<std::string>> out;
    std::string piece;
    std::stringstream in(text);
    while (std::getline(in, piece, '.')) {
      std::stringstream words(piece);
      std::vector<std::string> w;
      for (std::string x; words >> x;) w.push_back(x);
      if (!w.empty()) out.push_back(w);
    }
    return out;
  };
  const auto hyp = sentences(hypothesis), ref = sentences(reference);
  std::set<std::string> hyp_set, ref_set, hits;
  for (const auto& s : hyp) hyp_set.insert(s.begin(), s.end());
  for (const auto& s : ref) ref_set.insert(s.begin(), s.end());
  for (const auto& x : ref)
    for (const auto& y : hyp) {
      const size_t n = x.size(), m = y.size();
      std::vector<std::vector<int>> t(n + 1, std::vector<int>(m + 1, 0));
      for (size_t i = 1; i <= n; ++i)
        for (size_t j = 1; j <= m; ++j)
          t[i][j] = x[i - 1] == y[j - 1] ? t[i - 1][j - 1] + 1 : std::max(t[i - 1][j], t[i][j - 1]);
      size_t i = n, j = m;
      int calls = 1;
      std::vector<std::string> path;
      while (i > 0 && j > 0) {
        if (x[i - 1] == y[j - 1]) path.push_back(x[i - 1]), --i, --j;
        else if (t[i - 1][j] > t[i][j - 1]) --i;
        else --j;
        ++calls;
      }
      if (calls > kRougeMaxReconCalls) return std::nullopt;
      hits.insert(path.begin(), path.end());
    }
  const double llcs = static_cast<double>(hits.size());
  const double r = llcs / static_cast<double>(ref_set.size()), p = llcs / static_cast<double>(hyp_set.size());
  return 2.0 * ((p * r) / (p + r + 1e-8));
}

// ROUGE-L keeps only what the walk can reach (its last kRougeMaxReconCalls rows and columns) and
// gives identical scores, against the full-table computation: random texts over small and large
// vocabularies, sentence lengths around the recursion limit, several sentences, and a long text
// ending in a noisy copy of the short one (a short walk through a corner far from the table's
// origin, in both orientations).
TEST(LongBenchMetrics, RougeLInBoundedMemoryEqualsTheFullTable) {
  std::mt19937 rng(7);
  auto words = [&](int count, int vocabulary) {
    std::vector<std::string> w;
    for (int i = 0; i < count; ++i) w.push_back("w" + std::to_string(rng() % vocabulary));
    return w;
  };
  auto join_words = [](const std::vector<std::string>& w) {
    std::string s;
    for (const auto& x : w) s += (s.empty() ? "" : " ") + x;
    return s;
  };
  auto sentences = [&](const std::vector<int>& lengths, int vocabulary) {
    std::string s;
    for (int n : lengths) s += (s.empty() ? "" : ". ") + join_words(words(n, vocabulary));
    return s;
  };
  int none = 0, scored = 0;
  auto check = [&](const std::string& h, const std::string& r, const std::string& what) {
    const auto expected = full_table_rouge_l(h, r), got = rouge_l_f(h, r);
    ASSERT_EQ(got.has_value(), expected.has_value()) << what;
    if (expected) {
      EXPECT_EQ(*got, *expected) << what;
    }
    ++(expected ? scored : none);
  };
  for (const auto& [hyp, ref] : std::vector<std::pair<std::vector<int>, std::vector<int>>>{
           {{40}, {3000}}, {{3000}, {40}}, {{700}, {2500}}, {{989}, {1500}}, {{990}, {990}}, {{991}, {2000}},
           {{1200}, {1300}}, {{5, 900, 30}, {2000, 12}}, {{1}, {4000}}, {{600, 600}, {800}}})
    for (int vocabulary : {3, 40, 5000})
      check(sentences(hyp, vocabulary), sentences(ref, vocabulary),
            std::to_string(hyp[0]) + " x " + std::to_string(ref[0]) + ", vocabulary " + std::to_string(vocabulary));
  for (const auto& [short_n, long_n] : std::vector<std::pair<int, int>>{{50, 3000}, {500, 2500}, {900, 4000}, {985, 1500}})
    for (int noise_percent : {0, 10, 30})
      for (int vocabulary : {40, 5000}) {
        const auto short_words = words(short_n, vocabulary);
        auto long_words = words(long_n - short_n, vocabulary);
        for (const auto& w : short_words)
          long_words.push_back(static_cast<int>(rng() % 100) < noise_percent ? "x" + std::to_string(rng() % 50) : w);
        const std::string what = std::to_string(short_n) + " in " + std::to_string(long_n) + ", noise " +
                                 std::to_string(noise_percent) + "%, vocabulary " + std::to_string(vocabulary);
        check(join_words(short_words), join_words(long_words), what + " (hypothesis short)");
        check(join_words(long_words), join_words(short_words), what + " (reference short)");
      }
  EXPECT_GT(scored, 20);
  EXPECT_GT(none, 20);

  // Two 60,000-word sentences: the full table would take 14 GB (the package raises
  // RecursionError, since the walk is longer than the limit): no score, at once.
  std::string long_a, long_b;
  for (int i = 0; i < 60000; ++i) long_a += "a" + std::to_string(i % 97) + " ", long_b += "a" + std::to_string(i % 89) + " ";
  EXPECT_FALSE(rouge_l_f(long_a, long_b).has_value());
  EXPECT_EQ(rouge_score(long_a, long_b), 0.0);
}

TEST(LongBenchMetrics, ClassificationSkipsTheElementAfterARemovedOne) {
  const std::vector<std::string> classes = {"Other", "location", "Other location", "City"};
  // Matches [Other, location, Other location]; "Other" is removed, which skips "location": 1/2.
  EXPECT_EQ(classification_score("Other location", "Other location", classes), 0.5);
  EXPECT_EQ(classification_score("City", "City", classes), 1.0);
  EXPECT_EQ(classification_score("Other City", "City", classes), 0.5);
  EXPECT_EQ(classification_score("none", "City", classes), 0.0);
  EXPECT_EQ(classification_score("Other", "City", classes), 0.0);
}

TEST(LongBenchMetrics, RetrievalAndCount) {
  EXPECT_EQ(retrieval_score("Paragraph 3", "Paragraph 3"), 1.0);
  EXPECT_EQ(retrieval_score("Paragraph 3 and Paragraph 13", "Paragraph 3"), 0.5);
  EXPECT_EQ(retrieval_score("no number", "Paragraph 3"), 0.0);
  EXPECT_EQ(retrieval_score("3 \xd9\xa3", "Paragraph 3"), 0.5);  // U+0663 is a \d digit, not "3"
  EXPECT_THROW(retrieval_score("3", "paragraph 3"), Error);
  EXPECT_EQ(count_score("1 2 3 3", "3"), 0.5);
  EXPECT_EQ(count_score("", "3"), 0.0);
  EXPECT_EQ(count_score("03", "3"), 0.0);
}

TEST(LongBenchMetrics, SequenceMatcherAndFuzzRatio) {
  EXPECT_EQ(sequence_matcher_ratio("abcd", "bcde"), 0.75);  // block "bcd": 2 * 3 / 8
  EXPECT_EQ(sequence_matcher_ratio("", ""), 1.0);
  // The first longest block is "a"; then "c" in the rest, then "d": 2 * 3 / 8.
  EXPECT_EQ(sequence_matcher_ratio("acbd", "abcd"), 0.75);
  EXPECT_EQ(fuzz_ratio("abcdefgh", "ijklmnoa"), 12);  // 12.5: ties to even
  EXPECT_EQ(fuzz_ratio("abcdefgh", "abcijklm"), 38);  // 37.5
  EXPECT_EQ(fuzz_ratio("", ""), 100);
  EXPECT_EQ(fuzz_ratio("", "x"), 0);
  // Code points, not bytes: "é" vs "e" is one unmatched element each side: 2 * 2 / 6.
  EXPECT_EQ(fuzz_ratio("a\xc3\xa9" "b", "aeb"), 67);
}

TEST(LongBenchMetrics, AutojunkStopsPopularCharactersSeedingMatches) {
  // b has 200 characters: 'x' occurs 199 times (> 1 + 200 / 100), so it is popular and cannot
  // start a match; the only seed is the 'y' at the end, and the match then extends backwards
  // over equal characters: a = "xxy" matches "xxy" at b's end: 2 * 3 / 203.
  const std::string b = std::string(199, 'x') + "y";
  EXPECT_DOUBLE_EQ(sequence_matcher_ratio("xxy", b), 2.0 * 3 / 203);
  // Without a seed the longest match is the empty one at the start of both ranges, which is then
  // extended forwards over equal characters: "xx" matches b's first two 'x' (2 * 2 / 202), while
  // "zxx" cannot extend at all (0).
  EXPECT_DOUBLE_EQ(sequence_matcher_ratio("xx", b), 2.0 * 2 / 202);
  EXPECT_EQ(sequence_matcher_ratio("zxx", b), 0.0);
  // Below 200 characters 'x' is an ordinary element.
  EXPECT_DOUBLE_EQ(sequence_matcher_ratio("xx", std::string(198, 'x') + "y"), 2.0 * 2 / 201);
}

TEST(LongBenchMetrics, CodeSimilarityTakesTheFirstCodeLine) {
  EXPECT_EQ(code_sim_score("\n\n# comment\n// other\nfoo(bar)\n", "foo(bar)"), 1.0);
  EXPECT_EQ(code_sim_score("```\nx = 1", "x = 1"), 1.0);
  EXPECT_EQ(code_sim_score("a = b // 2\nc = 3", "c = 3"), 1.0);  // a '//' line is skipped
  EXPECT_EQ(code_sim_score("", "x"), 0.0);
  EXPECT_EQ(code_sim_score("# only\n# comments", ""), 1.0);  // "" == "": fuzz gives 100
}

}  // namespace
}  // namespace kvlab::longbench
