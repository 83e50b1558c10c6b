// LongBench's QA, classification, retrieval, counting and code metrics (see metrics.h); ROUGE-L and
// the difflib ratio have their own files.
#include <algorithm>
#include <map>

#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/metrics.h"
#include "python_text.h"

namespace kvlab::longbench {
namespace {

using pytext::Text;

bool is_ascii_punctuation(char32_t c) {  // Python's string.punctuation
  return (c >= U'!' && c <= U'/') || (c >= U':' && c <= U'@') || (c >= U'[' && c <= U'`') || (c >= U'{' && c <= U'~');
}

// re.sub(r"\b(a|an|the)\b", " ", s): a match starts and ends at word boundaries and holds only
// word characters, so it is exactly a maximal run of \w characters that spells a, an or the.
Text replace_articles(const Text& s) {
  Text out;
  size_t i = 0;
  while (i < s.size()) {
    if (!pytext::is_word(s[i])) {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i;
    while (j < s.size() && pytext::is_word(s[j])) ++j;
    const Text run = s.substr(i, j - i);
    if (run == U"a" || run == U"an" || run == U"the")
      out.push_back(U' ');
    else
      out += run;
    i = j;
  }
  return out;
}

// re.findall(r"\d+", s): maximal runs of Unicode decimal digits.
std::vector<Text> decimal_runs(const Text& s) {
  std::vector<Text> out;
  size_t i = 0;
  while (i < s.size()) {
    if (!pytext::is_decimal(s[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && pytext::is_decimal(s[j])) ++j;
    out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

double share_of(const std::vector<Text>& numbers, const Text& wanted) {
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), wanted);
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

}  // namespace

std::string normalize_answer(const std::string& s) {
  Text text = pytext::lower(pytext::decode(s));
  text.erase(std::remove_if(text.begin(), text.end(), is_ascii_punctuation), text.end());
  return pytext::encode(pytext::join(pytext::split_whitespace(replace_articles(text)), U" "));
}

double token_f1(const std::vector<std::string>& prediction, const std::vector<std::string>& truth) {
  std::map<std::string, int64_t> pred_counts, truth_counts;
  for (const auto& t : prediction) ++pred_counts[t];
  for (const auto& t : truth) ++truth_counts[t];
  int64_t same = 0;
  for (const auto& [token, n] : pred_counts) {
    auto it = truth_counts.find(token);
    if (it != truth_counts.end()) same += std::min(n, it->second);
  }
  if (same == 0) return 0.0;
  const double precision = 1.0 * static_cast<double>(same) / static_cast<double>(prediction.size());
  const double recall = 1.0 * static_cast<double>(same) / static_cast<double>(truth.size());
  return (2 * precision * recall) / (precision + recall);
}

double qa_f1_score(const std::string& prediction, const std::string& truth) {
  auto tokens = [](const std::string& s) {
    std::vector<std::string> out;
    for (const Text& t : pytext::split_whitespace(pytext::decode(normalize_answer(s)))) out.push_back(pytext::encode(t));
    return out;
  };
  return token_f1(tokens(prediction), tokens(truth));
}

double classification_score(const std::string& prediction, const std::string& truth,
                            const std::vector<std::string>& all_classes) {
  // Substring tests on valid UTF-8 bytes agree with Python's on code points.
  std::vector<std::string> matches;
  for (const auto& c : all_classes)
    if (prediction.find(c) != std::string::npos) matches.push_back(c);
  // Python's list iterator walks by index while list.remove() shifts the rest left.
  for (size_t i = 0; i < matches.size(); ++i) {
    const std::string term = matches[i];
    if (truth.find(term) != std::string::npos && term != truth)
      matches.erase(std::find(matches.begin(), matches.end(), term));  // first equal element
  }
  if (std::find(matches.begin(), matches.end(), truth) == matches.end()) return 0.0;
  return 1.0 / static_cast<double>(matches.size());
}

double retrieval_score(const std::string& prediction, const std::string& truth) {
  // re.findall(r'Paragraph (\d+)', truth)[0]
  const Text t = pytext::decode(truth);
  const Text key = U"Paragraph ";
  for (size_t pos = t.find(key); pos != Text::npos; pos = t.find(key, pos + 1)) {
    size_t end = pos + key.size();
    while (end < t.size() && pytext::is_decimal(t[end])) ++end;
    if (end > pos + key.size())
      return share_of(decimal_runs(pytext::decode(prediction)), t.substr(pos + key.size(), end - pos - key.size()));
  }
  fail("retrieval answer '{}' holds no 'Paragraph N'", truth);
}

double count_score(const std::string& prediction, const std::string& truth) {
  return share_of(decimal_runs(pytext::decode(prediction)), pytext::decode(truth));
}

double code_sim_score(const std::string& prediction, const std::string& truth) {
  const Text text = pytext::lstrip(pytext::decode(prediction), U'\n');
  Text line;
  for (const Text& candidate : pytext::split(text, U'\n')) {
    if (candidate.find(U'`') == Text::npos && candidate.find(U'#') == Text::npos &&
        candidate.find(U"//") == Text::npos) {
      line = candidate;
      break;
    }
  }
  return fuzz_ratio(pytext::encode(line), truth) / 100.0;
}

}  // namespace kvlab::longbench
