#include "kvlab/cache/quantized_stream.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kvlab/common/error.h"
#include "kvlab/kernels/packing.h"

namespace kvlab {
namespace {

at::ScalarType param_dtype(ParamType p) { return p == ParamType::F16 ? at::kHalf : at::kFloat; }

// idx [H, C] channel ids per head -> [B, H, T, C], the index gather/scatter along dim 3 take.
at::Tensor channel_index(const at::Tensor& idx, int64_t B, int64_t T) {
  return idx.view({1, idx.size(0), 1, idx.size(1)}).expand({B, idx.size(0), T, idx.size(1)});
}

}  // namespace

QuantizedStream::QuantizedStream(TensorQuantSpec spec, FlushRule rule) : spec_(spec), rule_(rule) {
  if (!spec_.quantized()) rule_.kind = FlushRule::Kind::Never;
}

int64_t QuantizedStream::unit() const {
  return spec_.quantized() && spec_.granularity == Granularity::PerChannel ? spec_.group : 1;
}

void QuantizedStream::reserve_full(int64_t tokens) {
  const int64_t cap = full_buf_.defined() ? full_buf_.size(2) : 0;
  if (full_begin_ + tokens <= cap) return;
  if (tokens <= cap && full_begin_ > 0) {  // room at the front: compact instead of growing
    if (full_len_ > 0)
      full_buf_.narrow(2, 0, full_len_).copy_(full_buf_.narrow(2, full_begin_, full_len_).clone());
    full_begin_ = 0;
    return;
  }
  const int64_t new_cap = std::max<int64_t>({tokens, 2 * cap, 64});
  at::Tensor buf = at::empty({B_, H_, new_cap, D_}, full_buf_.options());
  if (full_len_ > 0) buf.narrow(2, 0, full_len_).copy_(full_buf_.narrow(2, full_begin_, full_len_));
  full_buf_ = buf;
  full_begin_ = 0;
}

void QuantizedStream::append(const at::Tensor& x) {
  if (x.dim() != 4) fail("kv cache: expected [batch, heads, tokens, dim], got {} dims", x.dim());
  if (!full_buf_.defined()) {
    B_ = x.size(0), H_ = x.size(1), D_ = x.size(3);
    if (spec_.quantized()) spec_.validate(D_, "kv cache");
    G_ = spec_.quantized() ? spec_.resolved_group(D_) : 0;
    Dq_ = spec_.quantized() ? spec_.quantized_dim(D_) : D_;
    if (spec_.quantized() && has_exact_channels()) {
      const auto& per_head = spec_.head_exact_channels;
      if (!per_head.empty() && static_cast<int64_t>(per_head.size()) != H_)
        fail("kv cache: {} per-head exact-channel lists for {} kv heads", per_head.size(), H_);
      std::vector<int64_t> exact, rest;  // [H, n_exact], [H, Dq] row-major
      for (int64_t h = 0; h < H_; ++h) {
        const auto& list = per_head.empty() ? spec_.exact_channels : per_head[static_cast<size_t>(h)];
        for (int64_t d = 0, i = 0; d < D_; ++d) {
          if (i < static_cast<int64_t>(list.size()) && list[static_cast<size_t>(i)] == d) ++i, exact.push_back(d);
          else rest.push_back(d);
        }
      }
      exact_idx_ = at::tensor(exact, at::kLong).view({H_, -1}).to(x.device());
      quant_idx_ = at::tensor(rest, at::kLong).view({H_, -1}).to(x.device());
    }
    full_buf_ = at::empty({B_, H_, 64, D_}, x.options());
  } else if (x.size(0) != B_ || x.size(1) != H_ || x.size(3) != D_) {
    fail("kv cache: appended [{}, {}, _, {}] to a stream of [{}, {}, _, {}]", x.size(0), x.size(1), x.size(3), B_,
         H_, D_);
  }
  const int64_t T = x.size(2);
  reserve_full(full_len_ + T);
  full_buf_.narrow(2, full_begin_ + full_len_, T).copy_(x);
  full_len_ += T;
}

int64_t QuantizedStream::flush() {
  if (!spec_.quantized() || full_len_ == 0) return 0;
  const int64_t n = rule_.tokens_to_flush(full_len_, unit());
  if (n > 0) quantize_oldest(n);
  return n;
}

void QuantizedStream::reserve_packed(int64_t tokens) {
  if (tokens <= packed_cap_) return;
  const int64_t u = unit();
  int64_t cap = std::max<int64_t>({tokens, 2 * packed_cap_, 64});
  cap = (cap + u - 1) / u * u;
  const auto pdt = param_dtype(spec_.param);
  const auto opts = at::TensorOptions().device(full_buf_.device());
  at::Tensor codes, scales, zeros;
  if (spec_.granularity == Granularity::PerToken) {
    const int64_t Wt = kernels::packed_words(Dq_, spec_.bits);
    codes = at::zeros({B_, H_, cap, Wt}, opts.dtype(at::kInt));
    scales = at::zeros({B_, H_, cap, Dq_ / G_}, opts.dtype(pdt));
  } else {
    const int64_t Wc = kernels::packed_words(G_, spec_.bits);
    codes = at::zeros({B_, H_, cap / G_, Dq_, Wc}, opts.dtype(at::kInt));
    scales = at::zeros({B_, H_, cap / G_, Dq_}, opts.dtype(pdt));
  }
  zeros = spec_.symmetric ? at::Tensor() : at::zeros_like(scales);
  if (has_exact_channels()) {
    at::Tensor kept = at::zeros({B_, H_, cap, exact_idx_.size(1)}, full_buf_.options());
    if (packed_ > 0) kept.narrow(2, 0, packed_).copy_(kept_.narrow(2, 0, packed_));
    kept_ = kept;
  }
  if (packed_ > 0) {
    const int64_t rows = spec_.granularity == Granularity::PerToken ? packed_ : packed_ / G_;
    codes.narrow(2, 0, rows).copy_(codes_.narrow(2, 0, rows));
    scales.narrow(2, 0, rows).copy_(scales_.narrow(2, 0, rows));
    if (zeros.defined()) zeros.narrow(2, 0, rows).copy_(zeros_.narrow(2, 0, rows));
  }
  codes_ = codes, scales_ = scales, zeros_ = zeros;
  packed_cap_ = cap;
}

void QuantizedStream::quantize_oldest(int64_t n) {
  if (n <= 0) return;
  if (!spec_.quantized()) fail("kv cache: quantize_oldest on an unquantized stream");
  if (n > full_len_) fail("kv cache: cannot quantize {} tokens, {} in full precision", n, full_len_);
  if (n % unit() != 0) fail("kv cache: {} tokens is not a whole number of {}-token groups", n, unit());
  reserve_packed(packed_ + n);
  // The kernels read fp32 rows; this copy is the only conversion. Exact channels stay as they are.
  at::Tensor slice = full_buf_.narrow(2, full_begin_, n);
  if (has_exact_channels()) {
    kept_.narrow(2, packed_, n).copy_(at::gather(slice, 3, channel_index(exact_idx_, B_, n)));
    slice = at::gather(slice, 3, channel_index(quant_idx_, B_, n));
  }
  if (slice.is_cuda()) {  // the CUDA kernel reads the model's dtype directly
    cuda_backend::quantize_append(slice, layout());
    packed_ += n;
    full_begin_ += n;
    full_len_ -= n;
    if (full_len_ == 0) full_begin_ = 0;
    return;
  }
  at::Tensor src = slice.to(at::kFloat).contiguous();  // [B, H, n, Dq]
  const kernels::QuantShape shape{spec_.bits, G_, spec_.symmetric};
  const bool per_token = spec_.granularity == Granularity::PerToken;
  const int64_t Wt = per_token ? codes_.size(3) : 0;
  const int64_t Wc = per_token ? 0 : codes_.size(4);
  const int64_t cap_rows = codes_.size(2);
  const int64_t first_row = per_token ? packed_ : packed_ / G_;
  const int64_t sz_row = scales_.size(3);  // groups per token (per-token) or D (per-channel)
  const bool f16 = spec_.param == ParamType::F16;
  auto* codes = reinterpret_cast<uint32_t*>(codes_.data_ptr<int32_t>());
  const float* x = src.data_ptr<float>();
  at::parallel_for(0, B_ * H_, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const float* xs = x + bh * n * Dq_;
      const int64_t row0 = bh * cap_rows + first_row;
      uint32_t* c = per_token ? codes + row0 * Wt : codes + row0 * Dq_ * Wc;
      const int64_t sz_off = row0 * sz_row;
      if (f16) {
        auto* s = scales_.data_ptr<at::Half>() + sz_off;
        auto* z = zeros_.defined() ? zeros_.data_ptr<at::Half>() + sz_off : nullptr;
        if (per_token) kernels::quantize_per_token<c10::Half>(xs, n, Dq_, Dq_, shape, c, s, z);
        else kernels::quantize_per_channel<c10::Half>(xs, n, Dq_, Dq_, shape, c, s, z);
      } else {
        auto* s = scales_.data_ptr<float>() + sz_off;
        auto* z = zeros_.defined() ? zeros_.data_ptr<float>() + sz_off : nullptr;
        if (per_token) kernels::quantize_per_token<float>(xs, n, Dq_, Dq_, shape, c, s, z);
        else kernels::quantize_per_channel<float>(xs, n, Dq_, Dq_, shape, c, s, z);
      }
    }
  });
  packed_ += n;
  full_begin_ += n;
  full_len_ -= n;
  if (full_len_ == 0) full_begin_ = 0;
}

at::Tensor QuantizedStream::full() const {
  if (!full_buf_.defined()) return at::Tensor();
  return full_buf_.narrow(2, full_begin_, full_len_);
}

kernels::PackedStream QuantizedStream::packed_view(int64_t b, int64_t h) const {
  kernels::PackedStream v;
  v.granularity = spec_.granularity;
  v.shape = {spec_.bits, G_, spec_.symmetric};
  v.param = spec_.param;
  v.tokens = packed_;
  if (packed_ == 0) return v;
  const int64_t bh = b * H_ + h;
  const int64_t cap_rows = codes_.size(2);
  const bool per_token = spec_.granularity == Granularity::PerToken;
  const int64_t words_per_row = per_token ? codes_.size(3) : Dq_ * codes_.size(4);
  v.codes = reinterpret_cast<const uint32_t*>(codes_.data_ptr<int32_t>()) + bh * cap_rows * words_per_row;
  const int64_t sz_off = bh * cap_rows * scales_.size(3);
  const size_t psize = spec_.param == ParamType::F16 ? 2 : 4;
  v.scales = static_cast<const char*>(scales_.data_ptr()) + sz_off * psize;
  v.zeros = zeros_.defined() ? static_cast<const char*>(zeros_.data_ptr()) + sz_off * psize : nullptr;
  if (has_exact_channels()) {
    // The packed tokens' exact channels, read in place from kept_ [B, H, cap, n_exact] when the
    // kernels read its dtype (the caller substitutes an fp32 copy otherwise).
    v.exact_dims = spec_.exact_count();
    const auto t = kept_.scalar_type();
    if (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) {
      v.exact_type = t == at::kFloat ? kernels::RowType::F32 : t == at::kHalf ? kernels::RowType::F16 : kernels::RowType::BF16;
      v.exact = static_cast<const char*>(kept_.data_ptr()) + bh * kept_.size(2) * v.exact_dims * kept_.element_size();
    }
  }
  return v;
}

cuda_backend::PackedLayout QuantizedStream::layout() const {
  cuda_backend::PackedLayout l;
  l.granularity = spec_.granularity;
  l.bits = spec_.bits;
  l.group = G_;
  l.symmetric = spec_.symmetric;
  l.param = spec_.param;
  l.dim = Dq_;
  l.tokens = packed_;
  if (!codes_.defined()) return l;
  const bool per_token = spec_.granularity == Granularity::PerToken;
  const int64_t cap_rows = codes_.size(2);
  l.codes = codes_.data_ptr();
  l.codes_stream_stride = cap_rows * (per_token ? codes_.size(3) : Dq_ * codes_.size(4));
  l.scales = scales_.data_ptr();
  l.zeros = zeros_.defined() ? zeros_.data_ptr() : nullptr;
  l.param_stream_stride = cap_rows * scales_.size(3);
  return l;
}

at::Tensor QuantizedStream::dequantized_by_tensor_ops() const {
  if (packed_ == 0) return at::empty({B_, H_, 0, Dq_}, full_buf_.options().dtype(at::kFloat));
  const at::Tensor &codes_all = codes_, &scales_all = scales_, &zeros_all = zeros_;
  const TensorQuantSpec& spec = spec_;
  const int64_t packed = packed_, G = G_, Dq = Dq_;
  const int b = spec.bits, cpw = kernels::codes_per_word(b);
  const auto iopt = codes_all.options();
  const at::Tensor shifts = at::arange(cpw, iopt) * b;  // code j of a word at bits j*b
  auto unpack = [&](const at::Tensor& words) {          // [..., W] -> [..., W * cpw] codes as float
    at::Tensor c = at::bitwise_and(at::__rshift__(words.unsqueeze(-1), shifts), (1 << b) - 1);
    return c.flatten(-2).to(at::kFloat);
  };
  const float L = spec.symmetric ? static_cast<float>((1 << (b - 1)) - 1) : 0.f;
  auto apply = [&](const at::Tensor& code, const at::Tensor& s, const at::Tensor& z) {
    if (spec.symmetric) return (code - L) * s;
    return code * s + z;
  };
  const int64_t B = codes_all.size(0), H = codes_all.size(1);
  if (spec.granularity == Granularity::PerToken) {
    at::Tensor code = unpack(codes_all.narrow(2, 0, packed)).narrow(-1, 0, Dq);        // [B, H, P, Dq]
    at::Tensor s = scales_all.narrow(2, 0, packed).to(at::kFloat).repeat_interleave(G, -1);
    at::Tensor z = spec.symmetric ? s : zeros_all.narrow(2, 0, packed).to(at::kFloat).repeat_interleave(G, -1);
    return apply(code, s, z).contiguous();
  }
  const int64_t nb = packed / G;
  at::Tensor code = unpack(codes_all.narrow(2, 0, nb)).narrow(-1, 0, G);                // [B, H, nb, Dq, G]
  at::Tensor s = scales_all.narrow(2, 0, nb).to(at::kFloat).unsqueeze(-1);              // [B, H, nb, Dq, 1]
  at::Tensor z = spec.symmetric ? s : zeros_all.narrow(2, 0, nb).to(at::kFloat).unsqueeze(-1);
  return apply(code, s, z).transpose(3, 4).reshape({B, H, packed, Dq}).contiguous();
}

at::Tensor QuantizedStream::channel_order() const {
  if (!has_exact_channels()) fail("kv cache: channel_order() of a stream without exact channels");
  return at::cat({quant_idx_, exact_idx_}, 1);
}

at::Tensor QuantizedStream::exact_rows() const {
  if (!has_exact_channels()) fail("kv cache: exact_rows() of a stream without exact channels");
  if (packed_ == 0) return at::empty({B_, H_, 0, spec_.exact_count()}, full_buf_.options().dtype(at::kFloat));
  return kept_.narrow(2, 0, packed_).to(at::kFloat).contiguous();
}

at::Tensor QuantizedStream::dequantized() const {
  const bool on_device = full_buf_.defined() && !full_buf_.is_cpu();
  const auto fopt = at::TensorOptions().dtype(at::kFloat).device(on_device ? full_buf_.device() : at::Device(at::kCPU));
  if (packed_ == 0) return at::empty({B_, H_, 0, D_}, fopt);  // every channel, exact ones included
  at::Tensor out = at::empty({B_, H_, packed_, Dq_}, fopt);
  if (on_device) {
    out = dequantized_by_tensor_ops();
    if (!has_exact_channels()) return out;
    at::Tensor whole = at::empty({B_, H_, packed_, D_}, out.options());
    whole.scatter_(3, channel_index(quant_idx_, B_, packed_), out);
    whole.scatter_(3, channel_index(exact_idx_, B_, packed_), kept_.narrow(2, 0, packed_).to(at::kFloat));
    return whole;
  }
  float* o = out.data_ptr<float>();
  at::parallel_for(0, B_ * H_, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const kernels::PackedStream v = packed_view(bh / H_, bh % H_);
      float* dst = o + bh * packed_ * Dq_;
      const bool per_token = spec_.granularity == Granularity::PerToken;
      if (v.param == ParamType::F16) {
        auto* s = static_cast<const c10::Half*>(v.scales);
        auto* z = static_cast<const c10::Half*>(v.zeros);
        if (per_token) kernels::dequantize_per_token<c10::Half>(v.codes, s, z, packed_, Dq_, v.shape, dst, Dq_);
        else kernels::dequantize_per_channel<c10::Half>(v.codes, s, z, packed_, Dq_, v.shape, dst, Dq_);
      } else {
        auto* s = static_cast<const float*>(v.scales);
        auto* z = static_cast<const float*>(v.zeros);
        if (per_token) kernels::dequantize_per_token<float>(v.codes, s, z, packed_, Dq_, v.shape, dst, Dq_);
        else kernels::dequantize_per_channel<float>(v.codes, s, z, packed_, Dq_, v.shape, dst, Dq_);
      }
    }
  });
  if (!has_exact_channels()) return out;
  at::Tensor whole = at::empty({B_, H_, packed_, D_}, at::kFloat);
  whole.scatter_(3, channel_index(quant_idx_, B_, packed_), out);
  whole.scatter_(3, channel_index(exact_idx_, B_, packed_), kept_.narrow(2, 0, packed_).to(at::kFloat));
  return whole;
}

ByteBreakdown QuantizedStream::bytes() const {
  ByteBreakdown b;
  if (!full_buf_.defined()) return b;
  const int64_t elem = static_cast<int64_t>(full_buf_.element_size());
  b.full_precision = B_ * H_ * full_len_ * D_ * elem;
  // The channel ids (int64): one list, or one per head.
  if (has_exact_channels() && spec_.quantized())
    b.metadata = (spec_.head_exact_channels.empty() ? exact_idx_.size(1) : exact_idx_.numel()) * 8;
  if (packed_ == 0) return b;
  const int64_t psize = spec_.param == ParamType::F16 ? 2 : 4;
  const int64_t per_group = spec_.symmetric ? 1 : 2;
  if (spec_.granularity == Granularity::PerToken) {
    b.packed_codes = B_ * H_ * packed_ * kernels::packed_words(Dq_, spec_.bits) * 4;
    b.scales_zeros = B_ * H_ * packed_ * (Dq_ / G_) * psize * per_group;
  } else {
    const int64_t blocks = packed_ / G_;
    b.packed_codes = B_ * H_ * blocks * Dq_ * kernels::packed_words(G_, spec_.bits) * 4;
    b.scales_zeros = B_ * H_ * blocks * Dq_ * psize * per_group;
  }
  b.full_precision += B_ * H_ * packed_ * (D_ - Dq_) * elem;  // exact channels of packed tokens
  return b;
}

int64_t QuantizedStream::capacity_bytes() const {
  int64_t total = 0;
  for (const auto* t : {&codes_, &scales_, &zeros_, &full_buf_, &kept_})
    if (t->defined()) total += static_cast<int64_t>(t->nbytes());
  return total;
}

void QuantizedStream::reset() {
  codes_ = scales_ = zeros_ = full_buf_ = kept_ = at::Tensor();
  packed_ = packed_cap_ = full_begin_ = full_len_ = 0;
}

std::vector<int64_t> QuantizedStream::schedule(int64_t steps) const {
  std::vector<int64_t> out(static_cast<size_t>(steps));
  int64_t packed = packed_, full = full_len_;
  const int64_t u = unit();
  for (int64_t t = 0; t < steps; ++t) {
    full += 1;
    const int64_t f = spec_.quantized() ? rule_.tokens_to_flush(full, u) : 0;
    packed += f;
    full -= f;
    out[static_cast<size_t>(t)] = packed;
  }
  return out;
}

}  // namespace kvlab
