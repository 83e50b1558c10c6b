// A GGUF file's model metadata and vocabulary on arbitrary bytes: the ModelConfig mapping (llama,
// qwen2) and the tokenizer built from tokenizer.ggml.* (BPE with a pre-tokenizer, or
// SentencePiece-style scores with byte fallback), which then encodes and decodes a fixed text.
#include "fuzz_input.h"
#include "kvlab/model/gguf_file.h"
#include "kvlab/model/gguf_model.h"
#include "kvlab/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "model.gguf");
  kvlab::fuzz::run_parser([&] {
    kvlab::GgufFile file(path);
    kvlab::fuzz::run_parser([&] { (void)kvlab::gguf_model_config(file); });
    const auto tok = kvlab::gguf_tokenizer(file);
    const auto ids = tok->encode("Hello world, 1234 caf\xc3\xa9!\n  <|im_start|>", true);
    (void)tok->decode(ids);
  });
  return 0;
}
