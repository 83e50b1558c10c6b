// The quantized cache's GPU calls (cuda_backend.h) on the CUDA kernels' C API. Without
// KVLAB_WITH_CUDA (a build against a LibTorch without CUDA) every call is an error.
#include "kvlab/cache/cuda_backend.h"

#include <ATen/ATen.h>

#include "kvlab/common/error.h"
#include "kvlab/common/process_usage.h"

#if KVLAB_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kvlab/cuda/kv_cuda.h"
#endif

namespace kvlab::cuda_backend {

#if KVLAB_WITH_CUDA

bool compiled() { return true; }

namespace {

int dtype_of(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return KVLAB_CUDA_F32;
    case at::kHalf: return KVLAB_CUDA_F16;
    case at::kBFloat16: return KVLAB_CUDA_BF16;
    default: fail("kv cache (cuda): {} has dtype {}, expected float, half or bfloat16", what, c10::toString(t.scalar_type()));
  }
}

// [B, H, T, C] with unit stride in C and batch-major streams (b * H + h), as the kernels index them.
at::Tensor streams_view(const at::Tensor& t) {
  if (t.stride(3) == 1 && t.stride(0) == t.size(1) * t.stride(1)) return t;
  return t.contiguous();
}

kvlab_cuda_rows rows_of(const at::Tensor& t, const char* what) {
  kvlab_cuda_rows r{};
  r.data = t.data_ptr();
  r.dtype = dtype_of(t, what);
  r.tokens = t.size(2);
  r.row_stride = t.stride(2);
  r.stream_stride = t.stride(1);
  return r;
}

kvlab_cuda_packed packed_of(const PackedLayout& p) {
  kvlab_cuda_packed c{};
  c.granularity = p.granularity == kernels::Granularity::PerToken ? KVLAB_CUDA_PER_TOKEN : KVLAB_CUDA_PER_CHANNEL;
  c.bits = p.bits;
  c.group = static_cast<int>(p.group);
  c.symmetric = p.symmetric;
  c.param_dtype = p.param == kernels::ParamType::F16 ? KVLAB_CUDA_F16 : KVLAB_CUDA_F32;
  c.dim = static_cast<int>(p.dim);
  c.tokens = p.tokens;
  c.codes = static_cast<uint32_t*>(p.codes);
  c.codes_stream_stride = p.codes_stream_stride;
  c.scales = p.scales;
  c.zeros = p.zeros;
  c.param_stream_stride = p.param_stream_stride;
  return c;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("kv cache (cuda): {}: {} {}", what, cudaGetErrorString(e), kvlab_cuda_error_detail());
}

// Peak device memory for `kvlab bench throughput` and the runner's throughput task: the caching
// allocator's allocated bytes (what torch.cuda.max_memory_allocated reports, the papers' figure).
int64_t allocated_bytes(const c10::Device& d, bool peak) {
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto stats = alloc::getDeviceStats(d.index() < 0 ? c10::cuda::current_device() : d.index());
  const auto& s = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  return peak ? s.peak : s.current;
}

const bool memory_hooks_registered = [] {
  DeviceMemoryHooks hooks;
  hooks.reset_peak = [](const c10::Device& d) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(d.index() < 0 ? c10::cuda::current_device() : d.index());
  };
  hooks.peak_bytes = [](const c10::Device& d) { return allocated_bytes(d, true); };
  hooks.current_bytes = [](const c10::Device& d) { return allocated_bytes(d, false); };
  register_device_memory_hooks(c10::DeviceType::CUDA, std::move(hooks));
  return true;
}();

}  // namespace

void quantize_append(const at::Tensor& x_in, const PackedLayout& dst) {
  const c10::cuda::CUDAGuard guard(x_in.device());  // launches go to the tensors' device
  const at::Tensor x = streams_view(x_in);
  const int64_t B = x.size(0), H = x.size(1), n = x.size(2);
  if (n == 0 || B * H == 0) return;
  const kvlab_cuda_rows rows = rows_of(x, "keys/values");
  const kvlab_cuda_packed p = packed_of(dst);
  at::Tensor status = at::zeros({KVLAB_CUDA_STATUS_WORDS}, x.options().dtype(at::kInt));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  check(kvlab_cuda_quantize_append(&rows, n, B * H, &p, status.data_ptr<int32_t>(), stream), "quantize");
  // One small copy back per flush: a bad value is reported before the tokens count as stored.
  const at::Tensor st = status.cpu();
  const int32_t* s = st.data_ptr<int32_t>();
  if (s[0] == KVLAB_CUDA_STATUS_NONFINITE)
    fail("kernels: non-finite value in K/V at batch {}, head {}, token {}, channel {}", s[1] / H, s[1] % H, s[2], s[3]);
  if (s[0] == KVLAB_CUDA_STATUS_OVERFLOW)
    fail("kernels: group range overflows the parameter type at batch {}, head {}, token {}, channel {} (use fp32 "
         "parameters)", s[1] / H, s[1] % H, s[2], s[3]);
}

at::Tensor decode_attention(const at::Tensor& q_in, const PackedLayout& k, const at::Tensor& k_full_in,
                            const at::Tensor& k_exact_in, const PackedLayout& v, const at::Tensor& v_full_in,
                            const at::Tensor& v_exact_in, float softmax_scale) {
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = q_in.to(at::kFloat).contiguous();
  const int64_t B = q.size(0), H = q.size(1), n_q = q.size(2), D = q.size(3);
  const at::Tensor k_full = streams_view(k_full_in), v_full = streams_view(v_full_in);
  kvlab_cuda_decode_args a{};
  a.q = q.data_ptr<float>();
  a.q_stream_stride = n_q * D;
  a.n_q = static_cast<int>(n_q);
  a.dim = static_cast<int>(D);
  a.streams = B * H;
  a.k = packed_of(k);
  a.v = packed_of(v);
  a.k_full = rows_of(k_full, "full-precision keys");
  a.v_full = rows_of(v_full, "full-precision values");
  at::Tensor k_exact, v_exact;
  auto attach_exact = [](kvlab_cuda_packed& p, const at::Tensor& e_in, at::Tensor& keep, int64_t D) {
    p.exact_dims = static_cast<int>(D - p.dim);
    if (p.exact_dims == 0 || p.tokens == 0) return;
    keep = streams_view(e_in);
    p.exact = keep.data_ptr();
    p.exact_dtype = dtype_of(keep, "exact channels");
    p.exact_row_stride = keep.stride(2);
    p.exact_stream_stride = keep.stride(1);
  };
  attach_exact(a.k, k_exact_in, k_exact, D);
  attach_exact(a.v, v_exact_in, v_exact, D);
  a.softmax_scale = softmax_scale;
  at::Tensor out = at::empty({B, H, n_q, D}, q.options());
  a.out = out.data_ptr<float>();
  a.out_stream_stride = n_q * D;
  const size_t ws_bytes = kvlab_cuda_decode_workspace_bytes(&a);
  at::Tensor ws;
  if (ws_bytes > 0) {
    ws = at::empty({static_cast<int64_t>((ws_bytes + 3) / 4)}, q.options());
    a.workspace = ws.data_ptr();
    a.workspace_bytes = ws_bytes;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
  check(kvlab_cuda_decode_attention(&a, stream), "decode attention");
  return out;
}

#else  // no CUDA in this build

bool compiled() { return false; }

[[noreturn]] static void unavailable() {
  fail("kv cache: quantized caches on a CUDA device need kvlab built with KVLAB_CUDA (a LibTorch with CUDA)");
}
void quantize_append(const at::Tensor&, const PackedLayout&) { unavailable(); }
at::Tensor decode_attention(const at::Tensor&, const PackedLayout&, const at::Tensor&, const at::Tensor&,
                            const PackedLayout&, const at::Tensor&, const at::Tensor&, float) {
  unavailable();
}

#endif

}  // namespace kvlab::cuda_backend
