// Bit packing and group quantization: the fast kernels against the plain reference, and the
// reference against the definition (round-trip bound, exact constant groups, rejected NaN/Inf).
#include <gtest/gtest.h>

#include <c10/util/Half.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/cpu/kernel_entries.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packing.h"

namespace kvlab::kernels {
namespace {

const int kBits[] = {1, 2, 3, 4, 8};

// One build's quantize entry point (or the reference).
using QuantEntry = void (*)(const float*, int64_t, int64_t, int64_t, const QuantShape&, uint32_t*, c10::Half*,
                            c10::Half*);


// Rows of D values, each row with its own offset and spread (so groups have varied ranges).
std::vector<float> random_rows(int64_t T, int64_t ld, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  std::uniform_real_distribution<float> spread(0.01f, 4.f), offset(-3.f, 3.f);
  std::vector<float> x(T * ld);
  for (int64_t t = 0; t < T; ++t) {
    const float s = spread(rng), o = offset(rng);
    for (int64_t d = 0; d < ld; ++d) x[t * ld + d] = o + s * n(rng);
  }
  return x;
}

TEST(Packing, CodesPerWordAndWords) {
  EXPECT_EQ(codes_per_word(1), 32);
  EXPECT_EQ(codes_per_word(3), 10);
  EXPECT_EQ(codes_per_word(8), 4);
  EXPECT_EQ(packed_words(32, 3), 4);
  EXPECT_EQ(packed_words(30, 3), 3);
  EXPECT_EQ(packed_words(0, 2), 0);
  EXPECT_FALSE(valid_bits(5));
  EXPECT_THROW(codes_per_word(6), Error);
}

TEST(Packing, HandPackedWord) {
  // 2-bit codes 1, 2, 3, 0, 1 -> bits (little end first) 01 10 11 00 01 = 0b01'00'11'10'01.
  const uint8_t codes[] = {1, 2, 3, 0, 1};
  uint32_t w = 0xffffffff;
  pack_codes(codes, 5, 2, &w);
  EXPECT_EQ(w, 0b0100111001u);
  // 3-bit: ten codes of 7 fill bits 0-29, bits 30-31 stay zero.
  const std::vector<uint8_t> sevens(10, 7);
  pack_codes(sevens.data(), 10, 3, &w);
  EXPECT_EQ(w, 0x3fffffffu);
}

TEST(Packing, FastEqualsReferenceBitExact) {
  std::mt19937 rng(7);
  for (int b : kBits) {
    for (int64_t n : {1, 7, 10, 31, 32, 33, 100, 1000}) {
      std::vector<uint8_t> codes(n), back(n), back_ref(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << b) - 1u));
      std::vector<uint32_t> w(packed_words(n, b), 0xdeadbeef), w_ref(packed_words(n, b), 0x12345678);
      pack_codes(codes.data(), n, b, w.data());
      reference::pack_codes(codes.data(), n, b, w_ref.data());
      EXPECT_EQ(w, w_ref) << "bits " << b << " n " << n;
      unpack_codes(w.data(), n, b, back.data());
      reference::unpack_codes(w.data(), n, b, back_ref.data());
      EXPECT_EQ(back, codes) << "bits " << b << " n " << n;
      EXPECT_EQ(back_ref, codes) << "bits " << b << " n " << n;
    }
  }
}

struct Case {
  int bits;
  int64_t group;
  bool symmetric;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int b : kBits)
    for (int64_t g : {8, 16, 32, 64})
      for (bool sym : {false, true})
        if (!(sym && b == 1)) out.push_back({b, g, sym});
  return out;
}

template <typename P>
void expect_fast_equals_reference(bool per_token) {
  const int64_t T = 64, D = 64, ld = 72;  // ld > D: strided rows
  const std::vector<float> x = random_rows(T, ld, 11);
  for (const Case& c : cases()) {
    const QuantShape q{c.bits, c.group, c.symmetric};
    const int64_t n_codes = per_token ? T * packed_words(D, c.bits) : (T / c.group) * D * packed_words(c.group, c.bits);
    const int64_t n_params = per_token ? T * (D / c.group) : (T / c.group) * D;
    std::vector<uint32_t> codes(n_codes), codes_ref(n_codes);
    std::vector<P> s(n_params), z(n_params), s_ref(n_params), z_ref(n_params);
    std::vector<float> y(T * ld, 0.f), y_ref(T * ld, 0.f);
    if (per_token) {
      quantize_per_token<P>(x.data(), T, D, ld, q, codes.data(), s.data(), z.data());
      reference::quantize_per_token<P>(x.data(), T, D, ld, q, codes_ref.data(), s_ref.data(), z_ref.data());
      dequantize_per_token<P>(codes.data(), s.data(), z.data(), T, D, q, y.data(), ld);
      reference::dequantize_per_token<P>(codes.data(), s.data(), z.data(), T, D, q, y_ref.data(), ld);
    } else {
      quantize_per_channel<P>(x.data(), T, D, ld, q, codes.data(), s.data(), z.data());
      reference::quantize_per_channel<P>(x.data(), T, D, ld, q, codes_ref.data(), s_ref.data(), z_ref.data());
      dequantize_per_channel<P>(codes.data(), s.data(), z.data(), T, D, q, y.data(), ld);
      reference::dequantize_per_channel<P>(codes.data(), s.data(), z.data(), T, D, q, y_ref.data(), ld);
    }
    const std::string what = ::testing::PrintToString(c.bits) + " bits, G " + std::to_string(c.group) +
                             (c.symmetric ? " sym" : " asym");
    ASSERT_EQ(codes, codes_ref) << what;
    for (int64_t i = 0; i < n_params; ++i) {
      ASSERT_EQ(static_cast<float>(s[i]), static_cast<float>(s_ref[i])) << what;
      if (!c.symmetric) {
        ASSERT_EQ(static_cast<float>(z[i]), static_cast<float>(z_ref[i])) << what;
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t d = 0; d < D; ++d)  // fused multiply-add may differ in the last bit
        ASSERT_NEAR(y[t * ld + d], y_ref[t * ld + d], 1e-6f * (1.f + std::fabs(y_ref[t * ld + d]))) << what;
    }
  }
}

TEST(GroupQuant, FastEqualsReferencePerTokenF16) { expect_fast_equals_reference<c10::Half>(true); }
TEST(GroupQuant, FastEqualsReferencePerTokenF32) { expect_fast_equals_reference<float>(true); }
TEST(GroupQuant, FastEqualsReferencePerChannelF16) { expect_fast_equals_reference<c10::Half>(false); }
TEST(GroupQuant, FastEqualsReferencePerChannelF32) { expect_fast_equals_reference<float>(false); }

// Every build of the loops this CPU runs (generic, AVX2, AVX-512) gives the same codes, scales and
// zeros, bit for bit.
TEST(GroupQuant, AllBuildsAgree) {
  if (!cpu_runs(KernelIsa::Avx2)) GTEST_SKIP() << "no AVX2 + FMA + F16C on this CPU: only the generic build runs";
  const int64_t T = 64, Tt = 37, D = 128;  // Tt: tokens that do not fill whole batches of 16
  const std::vector<float> x = random_rows(T, D, 5);
  std::vector<QuantEntry> per_token{&avx2::quantize_per_token_entry}, per_channel{&avx2::quantize_per_channel_entry};
  if (cpu_runs(KernelIsa::Avx512))
    per_token.push_back(&avx512::quantize_per_token_entry), per_channel.push_back(&avx512::quantize_per_channel_entry);
  auto bits = [](const std::vector<c10::Half>& h) {
    std::vector<uint16_t> out(h.size());
    for (size_t i = 0; i < h.size(); ++i) out[i] = h[i].x;
    return out;
  };
  for (const Case& c : cases()) {
    const QuantShape q{c.bits, c.group, c.symmetric};
    for (bool tok : {true, false}) {
      const int64_t n = tok ? Tt : T;
      std::vector<uint32_t> a(T * D), b(T * D);
      std::vector<c10::Half> sa(T * D), za(T * D);
      const QuantEntry base = tok ? QuantEntry{&generic::quantize_per_token_entry}
                                  : QuantEntry{&generic::quantize_per_channel_entry};
      base(x.data(), n, D, D, q, a.data(), sa.data(), za.data());
      for (QuantEntry quantize : tok ? per_token : per_channel) {
        std::vector<c10::Half> sb(T * D), zb(T * D);
        std::fill(b.begin(), b.end(), 0u);
        quantize(x.data(), n, D, D, q, b.data(), sb.data(), zb.data());
        const std::string what = std::to_string(c.bits) + " bits, G " + std::to_string(c.group) +
                                 (c.symmetric ? " sym" : "") + (tok ? " per-token" : " per-channel");
        ASSERT_EQ(a, b) << what;
        ASSERT_EQ(bits(sa), bits(sb)) << what;
        ASSERT_EQ(bits(za), bits(zb)) << what;
      }
    }
  }
}

// |x - x'| <= S / 2 for every element (fp32 parameters: no rounding of S and Z to account for).
TEST(GroupQuant, RoundTripErrorWithinHalfAStep) {
  const int64_t T = 64, D = 64;
  const std::vector<float> x = random_rows(T, D, 3);
  for (const Case& c : cases()) {
    const QuantShape q{c.bits, c.group, c.symmetric};
    for (bool per_token : {true, false}) {
      std::vector<uint32_t> codes(T * D);
      std::vector<float> s(T * D), z(T * D), y(T * D);
      if (per_token) {
        quantize_per_token<float>(x.data(), T, D, D, q, codes.data(), s.data(), z.data());
        dequantize_per_token<float>(codes.data(), s.data(), z.data(), T, D, q, y.data(), D);
      } else {
        quantize_per_channel<float>(x.data(), T, D, D, q, codes.data(), s.data(), z.data());
        dequantize_per_channel<float>(codes.data(), s.data(), z.data(), T, D, q, y.data(), D);
      }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < D; ++d) {
          const float S = per_token ? s[t * (D / c.group) + d / c.group] : s[(t / c.group) * D + d];
          const float err = std::fabs(x[t * D + d] - y[t * D + d]);
          ASSERT_LE(err, S / 2 + 1e-6f * (1.f + std::fabs(x[t * D + d])))
              << c.bits << " bits G " << c.group << (per_token ? " per-token" : " per-channel") << " t " << t;
        }
    }
  }
}

// A group whose values are all equal comes back exactly (S = 0, every code 0, x' = Z).
TEST(GroupQuant, ConstantGroupIsExact) {
  const int64_t T = 16, D = 32;
  std::vector<float> x(T * D);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) x[t * D + d] = 0.375f * static_cast<float>(d / 8) - 1.25f;  // fp16-exact
  for (int b : kBits) {
    const QuantShape q{b, 8, false};
    std::vector<uint32_t> codes(T * D);
    std::vector<c10::Half> s(T * D), z(T * D);
    std::vector<float> y(T * D);
    quantize_per_token<c10::Half>(x.data(), T, D, D, q, codes.data(), s.data(), z.data());
    dequantize_per_token<c10::Half>(codes.data(), s.data(), z.data(), T, D, q, y.data(), D);
    EXPECT_EQ(x, y) << b << " bits per-token";
    quantize_per_channel<c10::Half>(x.data(), T, D, D, q, codes.data(), s.data(), z.data());
    dequantize_per_channel<c10::Half>(codes.data(), s.data(), z.data(), T, D, q, y.data(), D);
    EXPECT_EQ(x, y) << b << " bits per-channel";
  }
}

// Every build this CPU runs, called directly, and the reference; G 8 and 16 take different loops.
std::vector<std::pair<std::string, QuantEntry>> quant_paths(bool per_token) {
  std::vector<std::pair<std::string, QuantEntry>> out;
  if (per_token) {
    out.push_back({"reference", &reference::quantize_per_token<c10::Half>});
    out.push_back({"generic", &generic::quantize_per_token_entry});
    if (cpu_runs(KernelIsa::Avx2)) out.push_back({"avx2", &avx2::quantize_per_token_entry});
    if (cpu_runs(KernelIsa::Avx512)) out.push_back({"avx512", &avx512::quantize_per_token_entry});
  } else {
    out.push_back({"reference", &reference::quantize_per_channel<c10::Half>});
    out.push_back({"generic", &generic::quantize_per_channel_entry});
    if (cpu_runs(KernelIsa::Avx2)) out.push_back({"avx2", &avx2::quantize_per_channel_entry});
    if (cpu_runs(KernelIsa::Avx512)) out.push_back({"avx512", &avx512::quantize_per_channel_entry});
  }
  return out;
}

TEST(GroupQuant, NanAndInfAreRejectedNamingTheElement) {
  const int64_t T = 16, D = 32;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = random_rows(T, D, 1);
    x[5 * D + 9] = bad;
    std::vector<uint32_t> codes(T * D);
    std::vector<c10::Half> s(T * D), z(T * D);
    for (int64_t G : {8, 16})
      for (bool per_token : {true, false})
        for (const auto& [name, quantize] : quant_paths(per_token)) {
          try {
            quantize(x.data(), T, D, D, {2, G, false}, codes.data(), s.data(), z.data());
            ADD_FAILURE() << "no error for " << bad << " from " << name << ", G " << G;
          } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("token 5, channel 9"), std::string::npos) << name << ": " << e.what();
          }
        }
  }
  // The public functions check and dispatch to one of the builds above.
  std::vector<float> x = random_rows(T, D, 1);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint32_t> codes(T * D);
  std::vector<c10::Half> s(T * D), z(T * D);
  EXPECT_THROW(quantize_per_token<c10::Half>(x.data(), T, D, D, {2, 16, false}, codes.data(), s.data(), z.data()),
               Error);
}

TEST(GroupQuant, ValuesBeyondFp16AreAnErrorNotInf) {
  const int64_t T = 16, D = 16;
  std::vector<float> x(T * D, 1.f);
  x[3 * D + 5] = 1e6f;  // token 3's group (and channel 5's) spans 1e6: its fp16 scale would be inf
  std::vector<uint32_t> codes(T * D);
  std::vector<c10::Half> s(T * D), z(T * D);
  for (bool per_token : {true, false})
    for (const auto& [name, quantize] : quant_paths(per_token)) {
      try {
        quantize(x.data(), T, D, D, {2, 16, false}, codes.data(), s.data(), z.data());
        ADD_FAILURE() << "no error from " << name;
      } catch (const Error& e) {
        const std::string want = per_token ? "token 3, channel 0" : "token 0, channel 5";
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << name << ": " << e.what();
      }
    }
  std::vector<float> sf(T * D), zf(T * D);  // fp32 parameters hold them
  EXPECT_NO_THROW(quantize_per_token<float>(x.data(), T, D, D, {2, 16, false}, codes.data(), sf.data(), zf.data()));
  EXPECT_NO_THROW(quantize_per_channel<float>(x.data(), T, D, D, {2, 16, false}, codes.data(), sf.data(), zf.data()));
}

TEST(GroupQuant, ShapesThatDoNotFitAreErrors) {
  std::vector<float> x(64, 1.f);
  std::vector<uint32_t> codes(64);
  std::vector<float> s(64), z(64);
  EXPECT_THROW(quantize_per_token<float>(x.data(), 2, 32, 32, {5, 8, false}, codes.data(), s.data(), z.data()), Error);
  EXPECT_THROW(quantize_per_token<float>(x.data(), 2, 32, 32, {2, 12, false}, codes.data(), s.data(), z.data()), Error);
  EXPECT_THROW(quantize_per_channel<float>(x.data(), 3, 16, 16, {2, 2, false}, codes.data(), s.data(), z.data()),
               Error);
  EXPECT_THROW(quantize_per_token<float>(x.data(), 2, 32, 32, {1, 8, true}, codes.data(), s.data(), z.data()), Error);
}

}  // namespace
}  // namespace kvlab::kernels
