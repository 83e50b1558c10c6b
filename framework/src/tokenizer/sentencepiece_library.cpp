#include "kvlab/tokenizer/sentencepiece_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <vector>

#include "kvlab/common/error.h"

namespace kvlab {
namespace {

constexpr const char* kShimName = "libkvlab_sentencepiece.so";

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
      handle = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
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
