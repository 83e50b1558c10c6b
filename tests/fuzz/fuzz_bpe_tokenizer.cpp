// tokenizer.json (HF byte-level BPE): loading, then encoding text and decoding the ids back. Byte-level
// BPE is lossless, so any accepted tokenizer must decode its own encoding of valid UTF-8 text.
#include "fuzz_input.h"
#include "kvlab/tokenizer/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "tokenizer.json");
  kvlab::fuzz::run_parser([&] {
    const auto tok = kvlab::BpeTokenizer::from_file(path);
    for (const char* text : {"", "Hello, world!", " the  quick\n\nbrown fox's 123 jumps", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac"}) {
      const auto ids = tok->encode(text, true);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) std::abort();
      (void)tok->decode(ids, false);
      (void)tok->decode(ids, true);
    }
  });
  return 0;
}
