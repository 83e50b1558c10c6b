#pragma once
// Bit packing of b-bit codes into 32-bit words, b in {1, 2, 3, 4, 8}.
//   Word w holds codes [w * cpw, (w + 1) * cpw) where cpw = codes_per_word(b); code j of a word
//   sits at bits [j * b, j * b + b) (little end first). b = 3 packs 10 codes per word, bits 30-31
//   unused (zero). A sequence of n codes takes packed_words(n, b) words; the tail is zero-filled.
#include <cstdint>

namespace kvlab::kernels {

bool valid_bits(int bits);                     // 1, 2, 3, 4 or 8
int codes_per_word(int bits);                  // 32, 16, 10, 8, 4
int64_t packed_words(int64_t n, int bits);     // ceil(n / codes_per_word)

void pack_codes(const uint8_t* codes, int64_t n, int bits, uint32_t* words);
void unpack_codes(const uint32_t* words, int64_t n, int bits, uint8_t* codes);

// Plain versions the fast ones are tested against.
namespace reference {
void pack_codes(const uint8_t* codes, int64_t n, int bits, uint32_t* words);
void unpack_codes(const uint32_t* words, int64_t n, int bits, uint8_t* codes);
}  // namespace reference

}  // namespace kvlab::kernels
