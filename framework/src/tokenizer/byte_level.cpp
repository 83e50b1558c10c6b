#include "byte_level.h"

#include <array>
#include <cstdint>

#include "unicode.h"

namespace kvlab::bpe {

namespace {

// Every character of the alphabet is below U+0100 + 68.
constexpr uint32_t kAlphabetEnd = 0x100 + 68;

struct Alphabet {
  std::array<uint32_t, 256> byte_to_char{};
  std::array<int16_t, kAlphabetEnd> char_to_byte{};  // -1: not in the alphabet

  Alphabet() {
    char_to_byte.fill(-1);
    uint32_t next = 0x100;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_char[b] = printable ? b : next++;
      char_to_byte[byte_to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

bool byte_level_to_bytes(std::string_view token, std::string* bytes) {
  const Alphabet& a = alphabet();
  bytes->clear();
  for (size_t pos = 0; pos < token.size();) {
    const uint32_t cp = unicode::decode_utf8(token, pos);
    if (cp >= kAlphabetEnd || a.char_to_byte[cp] < 0) return false;
    *bytes += static_cast<char>(a.char_to_byte[cp]);
  }
  return true;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string token;
  for (char c : bytes) unicode::append_utf8(token, alphabet().byte_to_char[static_cast<uint8_t>(c)]);
  return token;
}

}  // namespace kvlab::bpe
