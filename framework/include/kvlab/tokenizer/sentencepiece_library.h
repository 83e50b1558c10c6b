#pragma once
// libsentencepiece, reached through the kvlab_sentencepiece shim module (see
// framework/sentencepiece_shim/sentencepiece_shim.cpp for why it is loaded at run time).
#include <cstddef>
#include <string>

namespace kvlab {

struct SentencePieceLibrary {
  void* (*load)(const char* path, char* err, size_t err_len);
  void (*destroy)(void* handle);
  int (*encode)(void* handle, const char* text, size_t len, int** ids, size_t* count, char* err, size_t err_len);
  int (*decode)(void* handle, const int* ids, size_t count, char** text, size_t* len, char* err, size_t err_len);
  void (*free)(void* p);
  int (*piece_size)(void* handle);
  int (*bos_id)(void* handle);
  int (*eos_id)(void* handle);
  int (*is_control)(void* handle, int id);
  int (*train)(const char* args, char* err, size_t err_len);

  // The shim is looked for in $KVLAB_SENTENCEPIECE_SHIM, next to the running executable, then at
  // its build location. Throws kvlab::Error naming the places tried.
  static const SentencePieceLibrary& get();
};

}  // namespace kvlab
