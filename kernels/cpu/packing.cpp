// Bit packing of b-bit codes into 32-bit words (layout in packing.h).
#include "kvlab/kernels/packing.h"

#include <cstring>

#include "kvlab/common/error.h"

namespace kvlab::kernels {

bool valid_bits(int bits) { return bits == 1 || bits == 2 || bits == 3 || bits == 4 || bits == 8; }

int codes_per_word(int bits) {
  if (!valid_bits(bits)) fail("kernels: bit width {} is not one of 1, 2, 3, 4, 8", bits);
  return bits == 3 ? 10 : 32 / bits;
}

int64_t packed_words(int64_t n, int bits) {
  const int cpw = codes_per_word(bits);
  return (n + cpw - 1) / cpw;
}

namespace reference {

void pack_codes(const uint8_t* codes, int64_t n, int bits, uint32_t* words) {
  const int cpw = codes_per_word(bits);
  const int64_t nw = packed_words(n, bits);
  for (int64_t w = 0; w < nw; ++w) words[w] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t mask = (1u << bits) - 1u;
    words[i / cpw] |= (static_cast<uint32_t>(codes[i]) & mask) << ((i % cpw) * bits);
  }
}

void unpack_codes(const uint32_t* words, int64_t n, int bits, uint8_t* codes) {
  const int cpw = codes_per_word(bits);
  const uint32_t mask = (1u << bits) - 1u;
  for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>((words[i / cpw] >> ((i % cpw) * bits)) & mask);
}

}  // namespace reference

namespace {
// Fixed-width inner loops: the compiler unrolls and vectorizes each word's codes.
template <int B>
void pack_fixed(const uint8_t* codes, int64_t n, uint32_t* words) {
  constexpr int cpw = B == 3 ? 10 : 32 / B;
  constexpr uint32_t mask = (1u << B) - 1u;
  const int64_t full = n / cpw;
  for (int64_t w = 0; w < full; ++w) {
    const uint8_t* c = codes + w * cpw;
    uint32_t word = 0;
    for (int j = 0; j < cpw; ++j) word |= (static_cast<uint32_t>(c[j]) & mask) << (j * B);
    words[w] = word;
  }
  const int64_t rest = n - full * cpw;
  if (rest > 0) {
    uint32_t word = 0;
    for (int64_t j = 0; j < rest; ++j) word |= (static_cast<uint32_t>(codes[full * cpw + j]) & mask) << (j * B);
    words[full] = word;
  }
}

template <int B>
void unpack_fixed(const uint32_t* words, int64_t n, uint8_t* codes) {
  constexpr int cpw = B == 3 ? 10 : 32 / B;
  constexpr uint32_t mask = (1u << B) - 1u;
  const int64_t full = n / cpw;
  for (int64_t w = 0; w < full; ++w) {
    const uint32_t word = words[w];
    uint8_t* c = codes + w * cpw;
    for (int j = 0; j < cpw; ++j) c[j] = static_cast<uint8_t>((word >> (j * B)) & mask);
  }
  for (int64_t i = full * cpw; i < n; ++i)
    codes[i] = static_cast<uint8_t>((words[full] >> ((i - full * cpw) * B)) & mask);
}
}  // namespace

void pack_codes(const uint8_t* codes, int64_t n, int bits, uint32_t* words) {
  switch (bits) {
    case 1: return pack_fixed<1>(codes, n, words);
    case 2: return pack_fixed<2>(codes, n, words);
    case 3: return pack_fixed<3>(codes, n, words);
    case 4: return pack_fixed<4>(codes, n, words);
    case 8: return pack_fixed<8>(codes, n, words);
    default: fail("kernels: bit width {} is not one of 1, 2, 3, 4, 8", bits);
  }
}

void unpack_codes(const uint32_t* words, int64_t n, int bits, uint8_t* codes) {
  switch (bits) {
    case 1: return unpack_fixed<1>(words, n, codes);
    case 2: return unpack_fixed<2>(words, n, codes);
    case 3: return unpack_fixed<3>(words, n, codes);
    case 4: return unpack_fixed<4>(words, n, codes);
    case 8: return unpack_fixed<8>(words, n, codes);
    default: fail("kernels: bit width {} is not one of 1, 2, 3, 4, 8", bits);
  }
}

}  // namespace kvlab::kernels
