#include "kvlab/quant/quantizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kvlab/common/error.h"
#include "kvlab/kernels/group_quant.h"
#include "kvlab/kernels/packing.h"

namespace kvlab {
namespace {

at::ScalarType param_dtype(ParamType p) { return p == ParamType::F16 ? at::kHalf : at::kFloat; }

// Calls f(scales, zeros) with typed pointers for the stored parameter type.
template <typename F>
void with_params(const PackedTensor& p, int64_t offset, F&& f) {
  if (p.spec.param == ParamType::F16) {
    auto* s = p.scales.data_ptr<at::Half>() + offset;
    auto* z = p.zeros.defined() ? p.zeros.data_ptr<at::Half>() + offset : nullptr;
    f(reinterpret_cast<c10::Half*>(s), reinterpret_cast<c10::Half*>(z));
  } else {
    auto* s = p.scales.data_ptr<float>() + offset;
    auto* z = p.zeros.defined() ? p.zeros.data_ptr<float>() + offset : nullptr;
    f(s, z);
  }
}

}  // namespace

int64_t PackedTensor::code_bytes() const { return codes.numel() * 4; }
int64_t PackedTensor::param_bytes() const {
  const int64_t per = spec.param == ParamType::F16 ? 2 : 4;
  return (scales.numel() + (zeros.defined() ? zeros.numel() : 0)) * per;
}
double PackedTensor::bits_per_element() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n == 0 ? 0.0 : 8.0 * static_cast<double>(bytes()) / static_cast<double>(n);
}

Quantizer::Quantizer(TensorQuantSpec spec) : spec_(spec) {
  if (!spec_.quantized() || !kernels::valid_bits(spec_.bits))
    fail("quantizer: bits must be 1, 2, 3, 4 or 8, got {}", spec_.bits);
}

PackedTensor Quantizer::encode(const at::Tensor& x_in) const {
  if (x_in.dim() < 2) fail("quantizer: expected a tensor [..., tokens, dim], got {} dims", x_in.dim());
  if (!x_in.device().is_cpu()) fail("quantizer: encode runs on CPU tensors");
  const int64_t T = x_in.size(-2), D = x_in.size(-1);
  const int64_t N = T * D == 0 ? 0 : x_in.numel() / (T * D);
  PackedTensor p;
  p.spec = spec_;
  p.spec.group = spec_.resolved_group(D);
  p.spec.validate(D, "quantizer");
  p.shape = x_in.sizes().vec();
  const int64_t G = p.spec.group;
  const bool per_token = p.spec.granularity == Granularity::PerToken;
  if (!per_token && T % G != 0) fail("quantizer: per-channel group {} does not divide {} tokens", G, T);
  const at::Tensor x = x_in.to(at::kFloat).contiguous().view({N, T, D});
  const auto opts = at::TensorOptions().dtype(at::kInt);
  const auto popts = at::TensorOptions().dtype(param_dtype(p.spec.param));
  if (per_token) {
    p.codes = at::empty({N, T, kernels::packed_words(D, p.spec.bits)}, opts);
    p.scales = at::empty({N, T, D / G}, popts);
  } else {
    p.codes = at::empty({N, T / G, D, kernels::packed_words(G, p.spec.bits)}, opts);
    p.scales = at::empty({N, T / G, D}, popts);
  }
  if (!p.spec.symmetric) p.zeros = at::empty_like(p.scales);
  const kernels::QuantShape shape{p.spec.bits, G, p.spec.symmetric};
  const int64_t code_stride = N ? p.codes.numel() / N : 0, param_stride = N ? p.scales.numel() / N : 0;
  auto* codes = reinterpret_cast<uint32_t*>(p.codes.data_ptr<int32_t>());
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      with_params(p, n * param_stride, [&](auto* s, auto* z) {
        using P = std::remove_pointer_t<decltype(s)>;
        if (per_token)
          kernels::quantize_per_token<P>(xp + n * T * D, T, D, D, shape, codes + n * code_stride, s, z);
        else
          kernels::quantize_per_channel<P>(xp + n * T * D, T, D, D, shape, codes + n * code_stride, s, z);
      });
  });
  return p;
}

at::Tensor Quantizer::decode(const PackedTensor& p) {
  const int64_t T = p.shape[p.shape.size() - 2], D = p.shape.back();
  const int64_t N = T * D == 0 ? 0 : [&] {
    int64_t n = 1;
    for (int64_t s : p.shape) n *= s;
    return n / (T * D);
  }();
  at::Tensor out = at::empty({N, T, D}, at::kFloat);
  const kernels::QuantShape shape{p.spec.bits, p.spec.group, p.spec.symmetric};
  const bool per_token = p.spec.granularity == Granularity::PerToken;
  const int64_t code_stride = N ? p.codes.numel() / N : 0, param_stride = N ? p.scales.numel() / N : 0;
  const auto* codes = reinterpret_cast<const uint32_t*>(p.codes.data_ptr<int32_t>());
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      with_params(p, n * param_stride, [&](auto* s, auto* z) {
        using P = std::remove_pointer_t<decltype(s)>;
        if (per_token)
          kernels::dequantize_per_token<P>(codes + n * code_stride, s, z, T, D, shape, op + n * T * D, D);
        else
          kernels::dequantize_per_channel<P>(codes + n * code_stride, s, z, T, D, shape, op + n * T * D, D);
      });
  });
  return out.view(p.shape);
}

}  // namespace kvlab
