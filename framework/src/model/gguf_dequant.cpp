// Dequantization of ggml block types to fp32. The loops are plain and branch-free per block so the
// compiler vectorizes them; this file is built with -ffp-contract=off (CMakeLists.txt) so that
// `d * q + m` stays two roundings, as the definition (gguf.quants, numpy) computes it.
#include "kvlab/model/gguf_dequant.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "kvlab/common/error.h"

namespace kvlab {
namespace {

constexpr int QK = 32;  // elements per block of the legacy types

constexpr GgmlTypeInfo kTypes[] = {
    {GgmlType::F32, "F32", 1, 4, true},         {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", 32, 18, true},     {GgmlType::Q4_1, "Q4_1", 32, 20, true},
    {GgmlType::Q5_0, "Q5_0", 32, 22, true},     {GgmlType::Q5_1, "Q5_1", 32, 24, true},
    {GgmlType::Q8_0, "Q8_0", 32, 34, true},     {GgmlType::Q8_1, "Q8_1", 32, 40, false},
    {GgmlType::Q2_K, "Q2_K", 256, 84, true},    {GgmlType::Q3_K, "Q3_K", 256, 110, true},
    {GgmlType::Q4_K, "Q4_K", 256, 144, true},   {GgmlType::Q5_K, "Q5_K", 256, 176, true},
    {GgmlType::Q6_K, "Q6_K", 256, 210, true},   {GgmlType::Q8_K, "Q8_K", 256, 292, false},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66, false}, {GgmlType::IQ2_XS, "IQ2_XS", 256, 74, false},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98, false}, {GgmlType::IQ1_S, "IQ1_S", 256, 50, false},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18, false},    {GgmlType::IQ3_S, "IQ3_S", 256, 110, false},
    {GgmlType::IQ2_S, "IQ2_S", 256, 82, false},     {GgmlType::IQ4_XS, "IQ4_XS", 256, 136, false},
    {GgmlType::I8, "I8", 1, 1, false},          {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},        {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},        {GgmlType::IQ1_M, "IQ1_M", 256, 56, false},
    {GgmlType::BF16, "BF16", 1, 2, true},       {GgmlType::TQ1_0, "TQ1_0", 256, 54, false},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66, false}, {GgmlType::MXFP4, "MXFP4", 32, 17, false},
};

// IEEE half -> float, exact for every input (NaN payloads kept); a table of all 65536 values.
struct HalfTable {
  std::array<float, 65536> value;
  HalfTable() {
    for (uint32_t h = 0; h < 65536; ++h) {
      const uint32_t sign = (h & 0x8000u) << 16;
      uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
      if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
      } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
      } else if (mant == 0) {
        bits = sign;
      } else {  // subnormal: normalise the mantissa
        uint32_t e = 113;
        while (!(mant & 0x400)) mant <<= 1, --e;
        bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
      }
      std::memcpy(&value[h], &bits, 4);
    }
  }
};
const HalfTable& half_table() {
  static const HalfTable table;
  return table;
}

inline uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline float half(const float* table, const uint8_t* p) { return table[u16(p)]; }

// ---- the block loops; each writes one block of output

void q8_0(const float* h, const uint8_t* b, float* y) {
  const float d = half(h, b);
  const int8_t* q = reinterpret_cast<const int8_t*>(b + 2);
  for (int l = 0; l < QK; ++l) y[l] = static_cast<float>(q[l]) * d;
}

void q4_0(const float* h, const uint8_t* b, float* y) {
  const float d = half(h, b);
  const uint8_t* qs = b + 2;
  for (int l = 0; l < QK / 2; ++l) {
    y[l] = d * static_cast<float>((qs[l] & 0x0F) - 8);
    y[l + QK / 2] = d * static_cast<float>((qs[l] >> 4) - 8);
  }
}

void q4_1(const float* h, const uint8_t* b, float* y) {
  const float d = half(h, b), m = half(h, b + 2);
  const uint8_t* qs = b + 4;
  for (int l = 0; l < QK / 2; ++l) {
    y[l] = d * static_cast<float>(qs[l] & 0x0F) + m;
    y[l + QK / 2] = d * static_cast<float>(qs[l] >> 4) + m;
  }
}

inline uint32_t u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// The fifth bits of a Q5 block, as 0 or 16 per element (a scalar pass; the main loops vectorize).
inline void fifth_bits(uint32_t qh, uint8_t hb[QK]) {
  for (int l = 0; l < QK; ++l) hb[l] = static_cast<uint8_t>(((qh >> l) & 1u) << 4);
}

void q5_0(const float* h, const uint8_t* b, float* y) {
  const float d = half(h, b);
  uint8_t hb[QK];
  fifth_bits(u32(b + 2), hb);
  const uint8_t* qs = b + 6;
  for (int l = 0; l < QK / 2; ++l) {
    y[l] = d * static_cast<float>(((qs[l] & 0x0F) | hb[l]) - 16);
    y[l + QK / 2] = d * static_cast<float>(((qs[l] >> 4) | hb[l + QK / 2]) - 16);
  }
}

void q5_1(const float* h, const uint8_t* b, float* y) {
  const float d = half(h, b), m = half(h, b + 2);
  uint8_t hb[QK];
  fifth_bits(u32(b + 4), hb);
  const uint8_t* qs = b + 8;
  for (int l = 0; l < QK / 2; ++l) {
    y[l] = d * static_cast<float>((qs[l] & 0x0F) | hb[l]) + m;
    y[l + QK / 2] = d * static_cast<float>((qs[l] >> 4) | hb[l + QK / 2]) + m;
  }
}

// Q2_K: element h*128 + j*32 + l is bits 2j of qs[h*32 + l]; scale/min of element e: scales[e/16].
void q2_k(const float* ht, const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = half(ht, b + 80), dmin = half(ht, b + 82);
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int half16 = 0; half16 < 2; ++half16) {
        const int e0 = h * 128 + j * 32 + half16 * 16;
        const uint8_t sc = scales[e0 / 16];
        const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l) {
          const int q = (qs[h * 32 + half16 * 16 + l] >> (2 * j)) & 3;
          y[e0 + l] = dl * static_cast<float>(q) - ml;
        }
      }
}

// Q3_K: low 2 bits as Q2_K; the high bit of element e is bit e/32 of hmask[e%32] (set: no offset,
// clear: -4); 16 six-bit scales minus 32.
void q3_k(const float* ht, const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = half(ht, b + 108);
  float dl[16];
  for (int k = 0; k < 16; ++k) {
    const int lo = k < 8 ? (sc[k] & 0x0F) : (sc[k - 8] >> 4);
    const int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    dl[k] = d * static_cast<float>(static_cast<int8_t>(lo | (hi << 4)) - 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j) {
      const int e0 = h * 128 + j * 32, i = e0 / 32;
      for (int l = 0; l < 32; ++l) {
        const int low = (qs[h * 32 + l] >> (2 * j)) & 3;
        const int high = ((hmask[l] >> i) & 1) ^ 1;
        y[e0 + l] = dl[(e0 + l) / 16] * static_cast<float>(low - (high << 2));
      }
    }
}

// The 8 six-bit scales and mins of Q4_K / Q5_K, packed in 12 bytes.
void k_scale_min(const uint8_t* s, int sc[8], int mn[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 0x3F;
    mn[j] = s[4 + j] & 0x3F;
    sc[4 + j] = (s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30);
    mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
  }
}

// Q4_K: sub-block s (32 elements) is nibble s%2 of qs[(s/2)*32 + l].
void q4_k(const float* ht, const uint8_t* b, float* y) {
  const float d = half(ht, b), dmin = half(ht, b + 2);
  int sc[8], mn[8];
  k_scale_min(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    const float ds = d * static_cast<float>(sc[s]), ms = dmin * static_cast<float>(mn[s]);
    const uint8_t* q = qs + (s / 2) * 32;
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; ++l) y[s * 32 + l] = ds * static_cast<float>((q[l] >> shift) & 0x0F) - ms;
  }
}

// Q5_K: as Q4_K plus a fifth bit: bit s of qh[l] for element s*32 + l.
void q5_k(const float* ht, const uint8_t* b, float* y) {
  const float d = half(ht, b), dmin = half(ht, b + 2);
  int sc[8], mn[8];
  k_scale_min(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    const float ds = d * static_cast<float>(sc[s]), ms = dmin * static_cast<float>(mn[s]);
    const uint8_t* q = qs + (s / 2) * 32;
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> s) & 1) << 4);
      y[s * 32 + l] = ds * static_cast<float>(v) - ms;
    }
  }
}

// Q6_K: element e = h*128 + j*32 + l (j < 4, l < 32) takes nibble j/2 of ql[h*64 + (j%2)*32 + l] and
// bits 2j of qh[h*32 + l]; signed scale scales[e/16].
void q6_k(const float* ht, const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half(ht, b + 208);
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int half16 = 0; half16 < 2; ++half16) {
        const int e0 = h * 128 + j * 32 + half16 * 16;
        const float ds = d * static_cast<float>(scales[e0 / 16]);
        const uint8_t* lo = ql + h * 64 + (j % 2) * 32 + half16 * 16;
        const uint8_t* hi = qh + h * 32 + half16 * 16;
        const int lshift = 4 * (j / 2), hshift = 2 * j;
        for (int l = 0; l < 16; ++l) {
          const int q = ((lo[l] >> lshift) & 0x0F) | (((hi[l] >> hshift) & 3) << 4);
          y[e0 + l] = ds * static_cast<float>(q - 32);
        }
      }
}

using BlockFn = void (*)(const float*, const uint8_t*, float*);

BlockFn block_fn(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return q8_0;
    case GgmlType::Q4_0: return q4_0;
    case GgmlType::Q4_1: return q4_1;
    case GgmlType::Q5_0: return q5_0;
    case GgmlType::Q5_1: return q5_1;
    case GgmlType::Q2_K: return q2_k;
    case GgmlType::Q3_K: return q3_k;
    case GgmlType::Q4_K: return q4_k;
    case GgmlType::Q5_K: return q5_k;
    case GgmlType::Q6_K: return q6_k;
    default: return nullptr;
  }
}

}  // namespace

std::optional<GgmlTypeInfo> ggml_type_info(uint32_t id) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == id) return t;
  return std::nullopt;
}

std::string ggml_type_name(GgmlType t) {
  const auto info = ggml_type_info(static_cast<uint32_t>(t));
  return info ? info->name : fmt::format("type {}", static_cast<uint32_t>(t));
}

std::string dequantizable_type_names() {
  std::string out;
  for (const auto& t : kTypes)
    if (t.dequantizable) out += (out.empty() ? "" : ", ") + std::string(t.name);
  return out;
}

void dequantize_blocks(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const auto info = ggml_type_info(static_cast<uint32_t>(type));
  if (!info || !info->dequantizable) fail("dequantize: type {} is not supported", ggml_type_name(type));
  if (n % info->block != 0) fail("dequantize: {} elements are not whole {} blocks", n, info->name);
  const float* h = half_table().value.data();
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = h[u16(src + 2 * i)];
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t bits = static_cast<uint32_t>(u16(src + 2 * i)) << 16;
        std::memcpy(dst + i, &bits, 4);
      }
      return;
    default: break;
  }
  const BlockFn fn = block_fn(type);
  const int64_t blocks = n / info->block;
  for (int64_t b = 0; b < blocks; ++b) fn(h, src + b * info->bytes, dst + b * info->block);
}

void dequantize_to_f32(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const auto info = ggml_type_info(static_cast<uint32_t>(type));
  if (!info || !info->dequantizable) fail("dequantize: type {} is not supported", ggml_type_name(type));
  if (n % info->block != 0) fail("dequantize: {} elements are not whole {} blocks", n, info->name);
  half_table();  // built once, before the threads start
  const int64_t blocks = n / info->block;
  // About 64K elements a task: large enough to amortise the fork, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, 65536 / info->block);
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    dequantize_blocks(type, src + b0 * info->bytes, dst + b0 * info->block, (b1 - b0) * info->block);
  });
}

}  // namespace kvlab
