#include "kvlab/model/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <vector>

#include "kvlab/kernels/linear16.h"

namespace kvlab {
namespace {

bool is_16bit(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// y [M, N] = x [M, K] @ w^T for 16-bit w, fp32 x, both contiguous on the CPU.
at::Tensor linear16(const at::Tensor& x, const at::Tensor& w) {
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const auto type = w.scalar_type() == at::kHalf ? kernels::RowType::F16 : kernels::RowType::BF16;
  const float* xp = x.data_ptr<float>();
  const void* wp = w.data_ptr();
  if (M <= kDirectRows) {
    at::Tensor y = at::empty({M, N}, x.options());
    float* yp = y.data_ptr<float>();
    // Chunks of output columns (weight rows) per thread, a multiple of the kernel's 4-row tile.
    const int64_t grain = std::max<int64_t>(64, (N / (4 * at::get_num_threads()) + 3) / 4 * 4);
    at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
      kernels::linear16_rows(xp, M, K, wp, type, n0, n1, yp, N);
    });
    return y;
  }
  // y^T [N, M]: a tile of weight rows gives a contiguous band of rows of y^T.
  at::Tensor yt = at::empty({N, M}, x.options());
  const int64_t tile = std::max<int64_t>(16, (int64_t{1} << 18) / K);  // 1 MiB of fp32 weights
  const int64_t tiles = (N + tile - 1) / tile;
  const at::Tensor xt = x.t();  // [K, M] view: BLAS reads it transposed, no copy
  const size_t elem = w.element_size();
  at::parallel_for(0, tiles, 1, [&](int64_t b0, int64_t b1) {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(tile * K));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n0 = b * tile, nt = std::min(tile, N - n0);
      kernels::widen_rows(static_cast<const char*>(wp) + n0 * K * elem, type, nt * K, buf.data());
      const at::Tensor wt = at::from_blob(buf.data(), {nt, K}, x.options());
      at::Tensor band = yt.narrow(0, n0, nt);
      at::mm_out(band, wt, xt);
    }
  });
  return yt.t().contiguous();
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const auto t = x.scalar_type();
  const at::Tensor bias = b.defined() && b.scalar_type() != t ? b.to(t) : b;
  if (w.scalar_type() == t) return bias.defined() ? at::linear(x, w, bias) : at::linear(x, w);
  const bool grad = c10::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad());
  const bool direct = x.device().is_cpu() && w.device().is_cpu() && t == at::kFloat && is_16bit(w.scalar_type()) &&
                      w.dim() == 2 && w.is_contiguous() && !grad && x.size(-1) == w.size(1);
  if (!direct) {
    const at::Tensor wt = w.to(t);
    return bias.defined() ? at::linear(x, wt, bias) : at::linear(x, wt);
  }
  const int64_t K = x.size(-1), N = w.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  at::Tensor y = linear16(x.reshape({-1, K}).contiguous(), w).view(out_shape);
  if (bias.defined()) y.add_(bias);
  return y;
}

}  // namespace kvlab
