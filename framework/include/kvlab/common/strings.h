#pragma once
// Small string helpers used in error messages.
#include <string>
#include <vector>

namespace kvlab {

size_t edit_distance(const std::string& a, const std::string& b);
// The candidates closest to `word` (edit distance <= max(2, |word| / 3)), best first.
std::vector<std::string> closest_names(const std::string& word, const std::vector<std::string>& candidates,
                                       size_t max_results = 3);
// "a, b, c"
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");
// " (did you mean 'x'?)" or "" when nothing is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace kvlab
