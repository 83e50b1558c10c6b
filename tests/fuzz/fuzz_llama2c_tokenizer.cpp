// llama2.c's tokenizer.bin (a converted checkpoint's llama2c_tokenizer.bin), with and without a
// vocabulary size from config.json, then encode and decode.
#include <cstring>

#include "fuzz_input.h"
#include "kvlab/tokenizer/llama2c_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The first two bytes choose the vocabulary size (0: read to the end of the file).
  const int32_t vocab = data[0] | (data[1] << 8);
  const std::string path = kvlab::fuzz::write_input(data + 2, size - 2, "tokenizer.bin");
  kvlab::fuzz::run_parser([&] {
    kvlab::Llama2cTokenizer tok(path, vocab);
    for (const char* text : {"", "Once upon a time", "\xc3\xa9t\xc3\xa9 \xff\xfe"}) {
      const auto ids = tok.encode(text, true);
      for (int32_t id : ids)
        if (id < 0 || id >= tok.vocab_size()) std::abort();
      (void)tok.decode(ids, false);
    }
  });
  return 0;
}
