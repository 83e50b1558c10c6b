// Fiber scheduler and runtime API of the host CUDA emulator (see cuda_emulator.h).
#include "cuda_emulator.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

namespace kvlab_emu {
namespace {

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  State state = State::Ready;
};

constexpr size_t kStackBytes = 256 * 1024;

struct Scheduler {
  ucontext_t main_ctx;
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<char> smem;
  std::vector<uint64_t> slots;          // [threads] shuffle exchange
  std::vector<uint32_t> warp_members;   // [warps] lanes that passed the last warp barrier together
  const std::function<void()>* body = nullptr;
  int current = -1;
  uint3 block{0, 0, 0};
  dim3 block_dim{1, 1, 1}, grid_dim{1, 1, 1};
  cudaError_t last_error = cudaSuccess;
};

Scheduler& sched() {
  static Scheduler s;
  return s;
}

[[noreturn]] void die(const char* what) {
  const Scheduler& s = sched();
  std::fprintf(stderr, "cuda emulator: %s (block %u,%u,%u, thread %d)\n", what, s.block.x, s.block.y, s.block.z,
               s.current);
  std::abort();
}

void fiber_main() {
  Scheduler& s = sched();
  (*s.body)();
  s.fibers[static_cast<size_t>(s.current)].state = State::Done;
  // Returning resumes uc_link (the scheduler).
}

void wait(State st) {
  Scheduler& s = sched();
  if (s.current < 0) die("barrier outside a kernel");
  Fiber& f = s.fibers[static_cast<size_t>(s.current)];
  f.state = st;
  swapcontext(&f.ctx, &s.main_ctx);
}

void run_block() {
  Scheduler& s = sched();
  const int n = static_cast<int>(s.block_dim.x * s.block_dim.y * s.block_dim.z);
  const int warps = (n + 31) / 32;
  s.fibers.assign(static_cast<size_t>(n), Fiber{});
  while (static_cast<int>(s.stacks.size()) < n) s.stacks.emplace_back(new char[kStackBytes]);
  s.slots.assign(static_cast<size_t>(n), 0);
  s.warp_members.assign(static_cast<size_t>(warps), 0);
  std::memset(s.smem.data(), 0xff, s.smem.size());
  for (int i = 0; i < n; ++i) {
    Fiber& f = s.fibers[static_cast<size_t>(i)];
    const unsigned u = static_cast<unsigned>(i);
    f.tid = {u % s.block_dim.x, (u / s.block_dim.x) % s.block_dim.y, u / (s.block_dim.x * s.block_dim.y)};
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = s.stacks[static_cast<size_t>(i)].get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &s.main_ctx;
    makecontext(&f.ctx, fiber_main, 0);
  }
  for (;;) {
    bool ran = false;
    for (int i = 0; i < n; ++i) {
      if (s.fibers[static_cast<size_t>(i)].state != State::Ready) continue;
      s.current = i;
      swapcontext(&s.main_ctx, &s.fibers[static_cast<size_t>(i)].ctx);
      ran = true;
    }
    s.current = -1;
    int live = 0, at_block = 0;
    for (const Fiber& f : s.fibers) {
      live += f.state != State::Done;
      at_block += f.state == State::AtBlockBarrier;
    }
    if (live == 0) break;
    if (at_block == live) {
      for (Fiber& f : s.fibers)
        if (f.state == State::AtBlockBarrier) f.state = State::Ready;
      continue;
    }
    bool released = false;
    for (int w = 0; w < warps; ++w) {
      int live_w = 0, at_w = 0;
      uint32_t mask = 0;
      for (int l = 0; l < 32 && w * 32 + l < n; ++l) {
        const State st = s.fibers[static_cast<size_t>(w * 32 + l)].state;
        live_w += st != State::Done;
        if (st == State::AtWarpBarrier) ++at_w, mask |= 1u << l;
      }
      if (at_w > 0 && at_w == live_w) {
        for (int l = 0; l < 32 && w * 32 + l < n; ++l)
          if (mask >> l & 1u) s.fibers[static_cast<size_t>(w * 32 + l)].state = State::Ready;
        s.warp_members[static_cast<size_t>(w)] = mask;
        released = true;
      }
    }
    if (!ran && !released) die("deadlock: some threads wait at __syncthreads, others at a warp barrier");
  }
}

}  // namespace

const uint3& thread_idx() { Scheduler& s = sched(); return s.fibers[static_cast<size_t>(s.current)].tid; }
const uint3& block_idx() { return sched().block; }
const dim3& block_dim() { return sched().block_dim; }
const dim3& grid_dim() { return sched().grid_dim; }
void sync_block() { wait(State::AtBlockBarrier); }
void sync_warp() { wait(State::AtWarpBarrier); }
void* dynamic_smem() { return sched().smem.data(); }
void set_launch_error(cudaError_t e) { sched().last_error = e; }

uint64_t exchange(uint64_t mine, int src) {
  Scheduler& s = sched();
  const int me = s.current;
  const int warp_base = me & ~31;
  s.slots[static_cast<size_t>(me)] = mine;
  wait(State::AtWarpBarrier);
  const uint32_t members = s.warp_members[static_cast<size_t>(me / 32)];
  if (!(members >> src & 1u)) die("shuffle reads a lane that is not taking part");
  const uint64_t got = s.slots[static_cast<size_t>(warp_base + src)];
  wait(State::AtWarpBarrier);  // nobody overwrites a slot before every lane has read
  return got;
}

void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  Scheduler& s = sched();
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535 || smem > 227 * 1024) {
    s.last_error = cudaErrorInvalidConfiguration;
    return;
  }
  s.body = &body;
  s.grid_dim = grid;
  s.block_dim = block;
  s.smem.assign(smem + 16, 0);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        s.block = {x, y, z};
        run_block();
      }
  s.body = nullptr;
}

}  // namespace kvlab_emu

// ---- runtime API ------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xab, bytes);  // device memory starts as garbage
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, k);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) { std::memset(p, value, bytes); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }
cudaError_t cudaGetLastError() {
  const cudaError_t e = kvlab_emu::sched().last_error;
  kvlab_emu::sched().last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return kvlab_emu::sched().last_error; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unknown error";
  }
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  // An emulated device with few multiprocessors, so that split-K paths run on small inputs.
  *value = attr == cudaDevAttrMultiProcessorCount ? 4 : 227 * 1024;
  return cudaSuccess;
}
