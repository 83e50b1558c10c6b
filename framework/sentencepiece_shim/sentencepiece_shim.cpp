// A C interface to libsentencepiece, built as its own shared module and dlopen'ed with
// RTLD_DEEPBIND by framework/src/tokenizer/sentencepiece_library.cpp.
//
// Why: Debian's libsentencepiece carries its own copy of protobuf-lite with exported symbols, and
// LibTorch links the full libprotobuf. Linked into one binary, the two copies interpose on each
// other and the process crashes in sentencepiece's static initialisers. Loaded with RTLD_DEEPBIND,
// this module and libsentencepiece resolve their symbols against themselves first, so each
// protobuf copy serves only its own library.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

void set_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = '\0';
}

// Runs `body` (which returns libsentencepiece's status) for a C entry point: 0 on success, else 1
// with the status, or the exception, as the error string. No C++ exception may cross this C
// interface (nor the link-map namespace it is loaded into): libsentencepiece's double-array builder
// throws on a malformed model (a zero-length piece, found by fuzz_sentencepiece).
template <typename F>
int guarded(char* err, size_t err_len, F&& body) {
  try {
    const auto status = body();
    if (status.ok()) return 0;
    set_error(err, err_len, status.ToString());
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
  } catch (...) {
    set_error(err, err_len, "unknown exception in libsentencepiece");
  }
  return 1;
}

}  // namespace

extern "C" {

void* kvspm_load(const char* path, char* err, size_t err_len) {
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;
  const int failed = guarded(err, err_len, [&] {
    sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    return sp->Load(path);
  });
  return failed ? nullptr : sp.release();
}

void kvspm_destroy(void* handle) { delete static_cast<sentencepiece::SentencePieceProcessor*>(handle); }

// On success *ids is a malloc'ed array of *count ids (free with kvspm_free).
int kvspm_encode(void* handle, const char* text, size_t len, int** ids, size_t* count, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<int> out;
    const auto status =
        static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, len), &out);
    if (status.ok()) {
      *count = out.size();
      *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, out.size()) * sizeof(int)));
      std::memcpy(*ids, out.data(), out.size() * sizeof(int));
    }
    return status;
  });
}

// On success *text is a malloc'ed buffer of *len bytes (free with kvspm_free).
int kvspm_decode(void* handle, const int* ids, size_t count, char** text, size_t* len, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::string out;
    const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(
        std::vector<int>(ids, ids + count), &out);
    if (status.ok()) {
      *len = out.size();
      *text = static_cast<char*>(std::malloc(std::max<size_t>(1, out.size())));
      std::memcpy(*text, out.data(), out.size());
    }
    return status;
  });
}

void kvspm_free(void* p) { std::free(p); }

int kvspm_piece_size(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetPieceSize(); }
int kvspm_bos_id(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->bos_id(); }
int kvspm_eos_id(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->eos_id(); }
int kvspm_is_control(void* h, int id) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->IsControl(id); }

int kvspm_train(const char* args, char* err, size_t err_len) {
  // The trainer logs its whole command line to stderr whatever --minloglevel says; failures come
  // back in the status, so its stderr is silenced for the call.
  std::fflush(stderr);
  const int saved = dup(2);
  const int null_fd = open("/dev/null", O_WRONLY);
  if (null_fd >= 0) dup2(null_fd, 2);
  const int failed = guarded(err, err_len, [&] { return sentencepiece::SentencePieceTrainer::Train(args); });
  std::fflush(stderr);
  if (saved >= 0) dup2(saved, 2), close(saved);
  if (null_fd >= 0) close(null_fd);
  return failed;
}

}  // extern "C"
