#pragma once
// ggml tensor types and their dequantization to fp32, bit-exact to the format's definition (the
// reference dequantizers of llama.cpp's gguf-py, `gguf.quants`: every product and sum rounded to
// fp32 in the same order, no fused multiply-add).
//
// Block layouts (one block = `block` elements stored in `bytes` bytes; f16 = IEEE half):
//   Q8_0  32 / 34   f16 d, i8 q[32]                             x = d * q
//   Q4_0  32 / 18   f16 d, u8 qs[16] (element i: low nibble of qs[i], i+16: high nibble)
//                                                               x = d * (q - 8)
//   Q4_1  32 / 20   f16 d, f16 m, qs[16]                        x = d * q + m
//   Q5_0  32 / 22   f16 d, u32 qh (bit i = 5th bit of element i), qs[16]   x = d * (q - 16)
//   Q5_1  32 / 24   f16 d, f16 m, u32 qh, qs[16]                x = d * q + m
//   Q2_K 256 / 84   u8 scales[16] (low nibble scale, high nibble min), u8 qs[64] (2 bits), f16 d,
//                   f16 dmin                                    x = (d*sc) * q - (dmin*mn)
//   Q3_K 256 / 110  u8 hmask[32], u8 qs[64] (2 low bits), u8 scales[12] (16 x 6 bits), f16 d
//                                                               x = (d*(sc-32)) * (q - 4*!hbit)
//   Q4_K 256 / 144  f16 d, f16 dmin, u8 scales[12] (8 x 6-bit scale and min), u8 qs[128]
//                                                               x = (d*sc) * q - (dmin*mn)
//   Q5_K 256 / 176  f16 d, f16 dmin, scales[12], u8 qh[32], qs[128]        as Q4_K, 5-bit q
//   Q6_K 256 / 210  u8 ql[128], u8 qh[64], i8 scales[16], f16 d            x = (d*sc) * (q - 32)
//   F32, F16, BF16: one element each.
#include <cstdint>
#include <optional>
#include <string>

namespace kvlab {

// ggml's type ids (as stored in GGUF tensor infos).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18,
  IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26,
  I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;       // "Q4_K"
  int64_t block;          // elements per block
  int64_t bytes;          // bytes per block
  bool dequantizable;     // kvlab can dequantize it
};

// The type's layout, or nullopt for an id ggml does not define.
std::optional<GgmlTypeInfo> ggml_type_info(uint32_t id);
std::string ggml_type_name(GgmlType t);
// "F32, F16, BF16, Q8_0, ..." for messages.
std::string dequantizable_type_names();

// Dequantizes `n` elements (a multiple of the type's block) from `src` into dst[0, n), threaded
// with at::parallel_for. The type must be dequantizable.
void dequantize_to_f32(GgmlType type, const uint8_t* src, float* dst, int64_t n);
// One-thread version over whole blocks (the reference the threaded one splits).
void dequantize_blocks(GgmlType type, const uint8_t* src, float* dst, int64_t n);

}  // namespace kvlab
