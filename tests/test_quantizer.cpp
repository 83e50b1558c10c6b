// The tensor-level Quantizer: encode/decode over any leading dims equals the reference kernels run
// per [T, D] slice, the byte count follows the layout, and bad shapes are clear errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kvlab/common/error.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/quant/quantizer.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

TEST(Quantizer, DecodeEqualsReferencePerSlice) {
  at::Generator g = at::detail::createCPUGenerator(3);
  const at::Tensor x = at::randn({2, 3, 64, 32}, g);
  for (Granularity gr : {Granularity::PerToken, Granularity::PerChannel}) {
    TensorQuantSpec spec;
    spec.bits = 3, spec.group = 16, spec.granularity = gr;
    const PackedTensor p = Quantizer(spec).encode(x);
    const at::Tensor y = Quantizer::decode(p);
    ASSERT_EQ(y.sizes(), x.sizes());
    const kernels::QuantShape qs{3, 16, false};
    const at::Tensor xs = x.reshape({6, 64, 32}).contiguous();
    for (int64_t n = 0; n < 6; ++n) {
      std::vector<uint32_t> codes(64 * 32);
      std::vector<c10::Half> s(64 * 32), z(64 * 32);
      std::vector<float> want(64 * 32);
      const float* xp = xs[n].data_ptr<float>();
      if (gr == Granularity::PerToken) {
        kernels::reference::quantize_per_token<c10::Half>(xp, 64, 32, 32, qs, codes.data(), s.data(), z.data());
        kernels::reference::dequantize_per_token<c10::Half>(codes.data(), s.data(), z.data(), 64, 32, qs, want.data(), 32);
      } else {
        kernels::reference::quantize_per_channel<c10::Half>(xp, 64, 32, 32, qs, codes.data(), s.data(), z.data());
        kernels::reference::dequantize_per_channel<c10::Half>(codes.data(), s.data(), z.data(), 64, 32, qs,
                                                              want.data(), 32);
      }
      const at::Tensor w = at::from_blob(want.data(), {64, 32});
      EXPECT_LT(test::max_abs_diff(y.reshape({6, 64, 32})[n], w), 1e-6);
    }
  }
}

TEST(Quantizer, BytesFollowTheLayout) {
  TensorQuantSpec spec;
  spec.bits = 2, spec.group = 32;
  const PackedTensor p = Quantizer(spec).encode(at::ones({4, 10, 128}));
  EXPECT_EQ(p.code_bytes(), 4 * 10 * (128 / 16) * 4);   // 16 codes a word
  EXPECT_EQ(p.param_bytes(), 4 * 10 * (128 / 32) * 2 * 2);  // fp16 scale + zero per group
  EXPECT_DOUBLE_EQ(p.bits_per_element(), 2.0 + 32.0 / 32);
  // A constant tensor comes back exactly.
  EXPECT_TRUE(at::equal(Quantizer::decode(p), at::ones({4, 10, 128})));
}

TEST(Quantizer, BadShapesAndBitsAreErrors) {
  TensorQuantSpec spec;
  spec.bits = 16;
  EXPECT_THROW(Quantizer{spec}, Error);
  spec.bits = 2, spec.group = 24;
  EXPECT_THROW(Quantizer(spec).encode(at::ones({4, 32})), Error);  // 24 does not divide 32
  spec.group = 8, spec.granularity = Granularity::PerChannel;
  EXPECT_THROW(Quantizer(spec).encode(at::ones({12, 32})), Error);  // 8 does not divide 12 tokens
  at::Tensor bad = at::ones({8, 32});
  bad[3][4] = std::nan("");
  EXPECT_THROW(Quantizer(spec).encode(bad), Error);
}

}  // namespace
}  // namespace kvlab
