// Matmuls against 16-bit weights under fp32 activations: the kernel (every build this CPU runs)
// against the reference (widen, accumulate in double), and kvlab::linear (direct kernel for few
// rows, widened tiles through BLAS for many) against at::linear on the widened weights.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <random>
#include <vector>

#include "../kernels/cpu/kernel_entries.h"
#include "kvlab/common/error.h"
#include "kvlab/kernels/linear16.h"
#include "kvlab/model/linear.h"
#include "test_helpers.h"

namespace kvlab {
namespace {

using kernels::RowType;

enum class Build { Dispatched, Generic, Avx2, Avx512 };

void check_rows(RowType type, int64_t M, int64_t N, int64_t K, int64_t n0, int64_t n1, Build build, uint32_t seed) {
  const std::vector<float> x = test::normal_floats(M * K, seed), wf = test::normal_floats(N * K, seed + 1);
  std::vector<c10::Half> wh(wf.begin(), wf.end());
  std::vector<c10::BFloat16> wb(wf.begin(), wf.end());
  const void* w = type == RowType::F16 ? static_cast<const void*>(wh.data()) : wb.data();
  std::vector<float> y(M * N, -7.f), want(M * N, -7.f);
  switch (build) {
    case Build::Dispatched: kernels::linear16_rows(x.data(), M, K, w, type, n0, n1, y.data(), N); break;
    case Build::Generic: kernels::generic::linear16_entry(x.data(), M, K, w, type, n0, n1, y.data(), N); break;
    case Build::Avx2: kernels::avx2::linear16_entry(x.data(), M, K, w, type, n0, n1, y.data(), N); break;
    case Build::Avx512: kernels::avx512::linear16_entry(x.data(), M, K, w, type, n0, n1, y.data(), N); break;
  }
  kernels::reference::linear16_rows(x.data(), M, K, w, type, n0, n1, want.data(), N);
  for (int64_t i = 0; i < M * N; ++i)
    ASSERT_NEAR(y[i], want[i], 1e-5 * std::sqrt(static_cast<double>(K)) * (1 + std::fabs(want[i])))
        << (type == RowType::F16 ? "f16" : "bf16") << " M " << M << " N " << N << " K " << K << " build "
        << static_cast<int>(build) << " i " << i;
}

TEST(Linear16, EveryBuildMatchesReference) {
  std::vector<Build> builds{Build::Dispatched, Build::Generic};
  if (kernels::cpu_runs(kernels::KernelIsa::Avx2)) builds.push_back(Build::Avx2);
  if (kernels::cpu_runs(kernels::KernelIsa::Avx512)) builds.push_back(Build::Avx512);
  uint32_t seed = 1;
  for (Build b : builds)
    for (RowType t : {RowType::F16, RowType::BF16})
      for (int64_t M : {1, 2, 3, 8})
        for (int64_t K : {8, 64, 576, 13})  // 13: not a multiple of 8 (portable loop)
          for (auto [N, n0, n1] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 0, 1}, {7, 0, 7}, {67, 5, 66}})
            check_rows(t, M, N, K, n0, n1, b, seed++);
}

TEST(Linear16, OnlyTheRequestedColumnsAreWritten) {
  const int64_t M = 3, N = 10, K = 16;
  const std::vector<float> x = test::normal_floats(M * K, 3), wf = test::normal_floats(N * K, 4);
  std::vector<c10::BFloat16> w(wf.begin(), wf.end());
  std::vector<float> y(M * N, -7.f);
  kernels::linear16_rows(x.data(), M, K, w.data(), RowType::BF16, 2, 6, y.data(), N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      if (n < 2 || n >= 6) {
        EXPECT_EQ(y[m * N + n], -7.f) << m << " " << n;
      }
  EXPECT_THROW(kernels::linear16_rows(x.data(), M, K, w.data(), RowType::F32, 0, 1, y.data(), N), Error);
}

TEST(Linear16, WidenIsExact) {
  const std::vector<float> f = test::normal_floats(1003, 5);
  std::vector<c10::Half> h(f.begin(), f.end());
  std::vector<c10::BFloat16> b(f.begin(), f.end());
  std::vector<float> out(f.size());
  kernels::widen_rows(h.data(), RowType::F16, static_cast<int64_t>(f.size()), out.data());
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(out[i], static_cast<float>(h[i])) << i;
  kernels::widen_rows(b.data(), RowType::BF16, static_cast<int64_t>(f.size()), out.data());
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(out[i], static_cast<float>(b[i])) << i;
}

// kvlab::linear on both of its paths (few rows: the kernel; many: widened tiles into BLAS), with a
// bias and a 3-d input, against at::linear on the widened weights.
TEST(Linear16, LinearEqualsWidenedMatmul) {
  c10::AutoGradMode no_grad(false);
  at::Generator g = at::detail::createCPUGenerator(7);
  for (auto dtype : {at::kBFloat16, at::kHalf})
    for (int64_t rows : {int64_t{1}, int64_t{5}, kDirectRows, kDirectRows + 1, int64_t{300}}) {
      const int64_t K = 96, N = 1000;  // N spans several tiles and thread chunks
      at::Tensor w = at::normal(0.0, 0.1, {N, K}, g).to(dtype);
      at::Tensor b = at::normal(0.0, 0.1, {N}, g).to(dtype);
      at::Tensor x = at::normal(0.0, 1.0, {1, rows, K}, g);
      at::Tensor want = at::linear(x, w.to(at::kFloat), b.to(at::kFloat));
      at::Tensor got = kvlab::linear(x, w, b);
      ASSERT_EQ(got.sizes(), want.sizes());
      ASSERT_EQ(got.scalar_type(), at::kFloat);
      EXPECT_LT(test::max_abs_diff(got, want), 1e-5) << rows;
    }
}

TEST(Linear16, SameDtypeAndAutogradTakeThePlainPath) {
  at::Tensor w = at::randn({8, 16}).to(at::kBFloat16).to(at::kFloat).requires_grad_();
  at::Tensor x = at::randn({2, 16});
  at::Tensor y = kvlab::linear(x, w);
  y.sum().backward();  // gradients flow to the weights
  EXPECT_TRUE(w.grad().defined());
  EXPECT_LT(test::max_abs_diff(y, at::linear(x, w)), 1e-6);
}

}  // namespace
}  // namespace kvlab
