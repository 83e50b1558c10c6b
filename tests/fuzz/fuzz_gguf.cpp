// The GGUF reader on arbitrary bytes: the header, metadata and tensor table are validated on open,
// so every value it hands out can be read and every tensor it accepts dequantizes without reading
// outside the mapping (ASan watches the mapped file's bounds through the copy below).
#include <ATen/core/Tensor.h>

#include "fuzz_input.h"
#include "kvlab/model/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "model.gguf");
  kvlab::fuzz::run_parser([&] {
    kvlab::GgufFile file(path);
    for (const auto& key : file.keys()) (void)file.value(key).describe();
    for (const auto& t : file.tensors()) {
      const at::Tensor x = file.load(t);  // every supported type, dequantized to fp32
      if (x.numel() > 0) (void)(x.data_ptr<float>()[0] + x.data_ptr<float>()[x.numel() - 1]);
    }
  });
  return 0;
}
