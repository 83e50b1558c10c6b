// llama2.c model.bin headers (`kvlab convert llama2c`, the runner's `llama2c:` models): seven int32
// fields whose products must match the file size.
#include "fuzz_input.h"
#include "kvlab/model/llama2c_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "model.bin");
  kvlab::fuzz::run_parser([&] { (void)kvlab::read_llama2c_header(path); });
  return 0;
}
