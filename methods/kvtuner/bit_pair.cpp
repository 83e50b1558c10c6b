#include "bit_pair.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "kvlab/common/error.h"

namespace kvlab::kvtuner {
namespace {

bool valid_bits(int b) { return b == 1 || b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }

// Reads the decimal number starting at s[i]; -1 if there is none.
int read_number(const std::string& s, size_t& i) {
  size_t j = i;
  while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
  if (j == i || j - i > 2) return -1;
  const int n = std::stoi(s.substr(i, j - i));
  i = j;
  return n;
}

}  // namespace

std::string BitPair::name() const { return fmt::format("K{}V{}", k, v); }

BitPair parse_bit_pair(const std::string& text, const std::string& where) {
  std::string s;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) s += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto bad = [&]() -> BitPair {
    fail("{}: '{}' is not a bit pair like K8V4 or KV4 (bits 1, 2, 3, 4, 8, 16)", where, text);
  };
  BitPair p;
  size_t i = 0;
  if (s.rfind("KV", 0) == 0) {
    i = 2;
    p.k = p.v = read_number(s, i);
  } else if (!s.empty() && s[0] == 'K') {
    i = 1;
    p.k = read_number(s, i);
    if (i >= s.size() || s[i] != 'V') return bad();
    ++i;
    p.v = read_number(s, i);
  } else {
    return bad();
  }
  if (i != s.size() || !valid_bits(p.k) || !valid_bits(p.v)) return bad();
  return p;
}

std::vector<BitPair> parse_bit_pairs(const std::string& list, const std::string& where) {
  std::vector<BitPair> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, comma - start);
    if (item.find_first_not_of(" \t") != std::string::npos) {
      const BitPair p = parse_bit_pair(item, where);
      if (std::find(out.begin(), out.end(), p) != out.end()) fail("{}: pair {} is listed twice", where, p.name());
      out.push_back(p);
    }
    start = comma + 1;
  }
  if (out.empty()) fail("{}: no bit pairs given (e.g. K8V8,K8V4,K4V4,K4V2,K2V2)", where);
  return out;
}

}  // namespace kvlab::kvtuner
