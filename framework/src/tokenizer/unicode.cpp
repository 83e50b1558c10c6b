#include "unicode.h"

#include <algorithm>
#include <array>
#include <unordered_map>
#include <vector>

namespace kvlab::unicode {

namespace {

// Length of a well-formed UTF-8 sequence starting at s[pos], or 0 when there is none. In the
// latter case *prefix is the length of the maximal prefix of a valid sequence (at least 1): the
// unit that lossy decoding replaces with one U+FFFD.
size_t utf8_sequence(std::string_view s, size_t pos, size_t* prefix) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[pos + i]); };
  const uint8_t b0 = byte(0);
  if (b0 < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    *prefix = 1;
    return 0;
  }
  for (size_t i = 1; i < len; ++i) {
    const bool ok = pos + i < s.size() && byte(i) >= (i == 1 ? lo : 0x80) && byte(i) <= (i == 1 ? hi : 0xBF);
    if (!ok) {
      *prefix = i;
      return 0;
    }
  }
  return len;
}

template <typename Range>
const Range* find_range(const Range* ranges, size_t count, uint32_t cp) {
  const Range* end = ranges + count;
  const Range* it = std::upper_bound(ranges, end, cp, [](uint32_t v, const Range& r) { return v < r.lo; });
  if (it == ranges) return nullptr;
  --it;
  return cp <= it->hi ? it : nullptr;
}

// Hangul syllables compose and decompose by arithmetic (Unicode ch. 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

// Invalid bytes travel through NFC as these private values (above the code point range) so that
// they come out unchanged.
constexpr uint32_t kRawByteBase = 0x110000;

const Decomposition* find_decomposition(uint32_t cp) {
  const Decomposition* end = kDecompositions + kDecompositionCount;
  const Decomposition* it =
      std::lower_bound(kDecompositions, end, cp, [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  return it != end && it->cp == cp ? it : nullptr;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* d = cp < kRawByteBase ? find_decomposition(cp) : nullptr;
  if (d == nullptr) {
    out.push_back(cp);
    return;
  }
  decompose(d->first, out);
  if (d->second != 0) decompose(d->second, out);
}

uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  static const std::unordered_map<uint64_t, uint32_t> pairs = [] {
    std::unordered_map<uint64_t, uint32_t> m;
    for (size_t i = 0; i < kDecompositionCount; ++i) {
      const Decomposition& d = kDecompositions[i];
      if (d.composes) m.emplace((uint64_t{d.first} << 32) | d.second, d.cp);
    }
    return m;
  }();
  const auto it = pairs.find((uint64_t{a} << 32) | b);
  return it == pairs.end() ? 0 : it->second;
}

// True when s certainly is in NFC already (the quick check answered "Yes" for every character
// and the combining marks are in canonical order).
bool nfc_quick_check(std::string_view s) {
  // Below the first table entry every code point is a starter that NFC leaves alone.
  static const uint32_t first_interesting = std::min(kCccRanges[0].lo, kNfcQcRanges[0].lo);
  uint8_t last_ccc = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      last_ccc = 0;
      continue;
    }
    const uint32_t cp = decode_utf8(s, pos);
    if (cp == kInvalid || cp < first_interesting) {
      last_ccc = 0;
      continue;
    }
    if (find_range(kNfcQcRanges, kNfcQcRangeCount, cp) != nullptr) return false;
    const uint8_t ccc = combining_class(cp);
    if (ccc != 0 && last_ccc > ccc) return false;
    last_ccc = ccc;
  }
  return true;
}

}  // namespace

uint32_t decode_utf8(std::string_view s, size_t& pos) {
  size_t prefix = 0;
  const size_t len = utf8_sequence(s, pos, &prefix);
  if (len == 0) {
    ++pos;
    return kInvalid;
  }
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[pos + i])); };
  uint32_t cp;
  switch (len) {
    case 1: cp = byte(0); break;
    case 2: cp = ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F); break;
    case 3: cp = ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F); break;
    default:
      cp = ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) | (byte(3) & 0x3F);
  }
  pos += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

CharClass char_class(uint32_t cp) {
  // ASCII dominates real text; answer it from a table built once.
  static const std::array<CharClass, 128> ascii = [] {
    std::array<CharClass, 128> a{};
    for (uint32_t c = 0; c < 128; ++c) {
      const ClassRange* r = find_range(kClassRanges, kClassRangeCount, c);
      a[c] = r ? r->cls : CharClass::kOther;
    }
    return a;
  }();
  if (cp < 128) return ascii[cp];
  const ClassRange* r = find_range(kClassRanges, kClassRangeCount, cp);
  return r ? r->cls : CharClass::kOther;
}

bool is_word_char(uint32_t cp) {
  const ClassRange* r = find_range(kClassRanges, kClassRangeCount, cp);
  return r != nullptr && r->word != 0;
}

uint8_t combining_class(uint32_t cp) {
  const CccRange* r = find_range(kCccRanges, kCccRangeCount, cp);
  return r ? r->ccc : 0;
}

std::string nfc(std::string_view s) {
  if (nfc_quick_check(s)) return std::string(s);

  // Full canonical decomposition ...
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    const uint32_t cp = decode_utf8(s, pos);
    decompose(cp == kInvalid ? kRawByteBase + static_cast<uint8_t>(s[start]) : cp, cps);
  }
  const auto ccc_of = [](uint32_t cp) { return cp >= kRawByteBase ? uint8_t{0} : combining_class(cp); };
  // ... canonical ordering: a stable sort by class of each run of non-starters ...
  for (size_t i = 0; i < cps.size();) {
    if (ccc_of(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && ccc_of(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [&](uint32_t a, uint32_t b) { return ccc_of(a) < ccc_of(b); });
    i = j;
  }
  // ... then canonical composition. After ordering, a mark is unblocked from the last starter
  // when it directly follows it or when the mark before it has a lower, non-zero class.
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  long starter = -1;
  uint8_t last_ccc = 0;
  for (uint32_t cp : cps) {
    const uint8_t ccc = ccc_of(cp);
    if (starter >= 0 && cp < kRawByteBase && out[starter] < kRawByteBase) {
      const bool adjacent = static_cast<size_t>(starter) + 1 == out.size();
      if (adjacent || (last_ccc != 0 && last_ccc < ccc)) {
        if (const uint32_t c = compose(out[starter], cp); c != 0) {
          out[starter] = c;
          continue;
        }
      }
    }
    if (ccc == 0) starter = static_cast<long>(out.size());
    last_ccc = ccc;
    out.push_back(cp);
  }
  std::string result;
  result.reserve(s.size());
  for (uint32_t cp : out) {
    if (cp >= kRawByteBase) {
      result += static_cast<char>(cp - kRawByteBase);
    } else {
      append_utf8(result, cp);
    }
  }
  return result;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    size_t prefix = 0;
    const size_t len = utf8_sequence(bytes, pos, &prefix);
    if (len != 0) {
      out.append(bytes.data() + pos, len);
      pos += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      pos += prefix;
    }
  }
  return out;
}

}  // namespace kvlab::unicode
