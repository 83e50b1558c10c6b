#include "kvlab/tokenizer/sentencepiece_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <vector>

#include "kvlab/common/error.h"

// AddressSanitizer (and the other sanitizers with interceptors) refuses RTLD_DEEPBIND: its
// interceptors must come first in every lookup.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KVLAB_SHIM_OWN_NAMESPACE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define KVLAB_SHIM_OWN_NAMESPACE 1
#endif
#endif

namespace kvlab {
namespace {

constexpr const char* kShimName = "libkvlab_sentencepiece.so";

// RTLD_DEEPBIND makes the shim and libsentencepiece resolve against themselves first, so their
// protobuf copy never meets LibTorch's. Sanitizer builds get the same isolation from a link-map
// namespace of the shim's own (it then has its own libc and libstdc++ too: every buffer that crosses
// the interface is either the caller's or freed by the shim's kvspm_free). The shim is built without
// sanitizer flags, so it needs no sanitizer runtime in that namespace.
void* open_shim(const std::string& path) {
#ifdef KVLAB_SHIM_OWN_NAMESPACE
  return dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
  return dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
}

std::vector<std::string> candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("KVLAB_SENTENCEPIECE_SHIM")) out.push_back(env);
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path() / kShimName).string());
#ifdef KVLAB_SENTENCEPIECE_SHIM_PATH
  out.push_back(KVLAB_SENTENCEPIECE_SHIM_PATH);
#endif
  return out;
}

template <typename F>
void resolve(void* handle, const char* name, F& fn, const std::string& path) {
  fn = reinterpret_cast<F>(dlsym(handle, name));
  if (fn == nullptr) fail("{}: missing symbol {} (rebuild kvlab)", path, name);
}

}  // namespace

const SentencePieceLibrary& SentencePieceLibrary::get() {
  static SentencePieceLibrary lib;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    void* handle = nullptr;
    std::string path;
    for (const auto& c : candidates()) {
      if (!std::filesystem::exists(c)) {
        tried += (tried.empty() ? "" : ", ") + c;
        continue;
      }
      handle = open_shim(c);
      if (handle == nullptr) fail("{}: cannot load the SentencePiece shim: {}", c, dlerror());
      path = c;
      break;
    }
    if (handle == nullptr) fail("SentencePiece shim {} not found (tried {})", kShimName, tried);
    resolve(handle, "kvspm_load", lib.load, path);
    resolve(handle, "kvspm_destroy", lib.destroy, path);
    resolve(handle, "kvspm_encode", lib.encode, path);
    resolve(handle, "kvspm_decode", lib.decode, path);
    resolve(handle, "kvspm_free", lib.free, path);
    resolve(handle, "kvspm_piece_size", lib.piece_size, path);
    resolve(handle, "kvspm_bos_id", lib.bos_id, path);
    resolve(handle, "kvspm_eos_id", lib.eos_id, path);
    resolve(handle, "kvspm_is_control", lib.is_control, path);
    resolve(handle, "kvspm_train", lib.train, path);
  });
  if (lib.load == nullptr) fail("SentencePiece shim failed to load earlier in this process");
  return lib;
}

}  // namespace kvlab
