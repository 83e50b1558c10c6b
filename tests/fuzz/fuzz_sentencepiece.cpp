// tokenizer.model (a SentencePiece protobuf), loaded through kvlab's shim, then encode and decode.
// libsentencepiece is not instrumented (it lives in the shim's own link-map namespace, see
// framework/src/tokenizer/sentencepiece_library.cpp), so libFuzzer sees coverage of kvlab's side only
// and mutates mostly blind; a crash or a hang inside libsentencepiece still stops the run.
#include "fuzz_input.h"
#include "kvlab/tokenizer/sentencepiece_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "tokenizer.model");
  kvlab::fuzz::run_parser([&] {
    kvlab::SentencePieceTokenizer tok(path);
    for (const char* text : {"", "Hello, world!", " the  quick\n\nbrown fox 123", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac"}) {
      const auto ids = tok.encode(text, true);
      for (int32_t id : ids)
        if (id < 0 || id >= tok.vocab_size()) std::abort();
      (void)tok.decode(ids, false);
      (void)tok.decode(ids, true);
    }
  });
  return 0;
}
