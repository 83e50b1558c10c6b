// The safetensors reader on arbitrary bytes: the header is validated completely before any tensor is
// handed out, so every tensor it accepts can be read to its last byte.
#include <ATen/core/Tensor.h>

#include "fuzz_input.h"
#include "kvlab/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvlab::fuzz::write_input(data, size, "model.safetensors");
  kvlab::fuzz::run_parser([&] {
    kvlab::SafetensorsFile file(path);
    for (const auto& e : file.entries()) {
      const at::Tensor t = file.tensor(e.name);
      const auto* bytes = static_cast<const volatile uint8_t*>(t.data_ptr());
      const size_t n = t.numel() * t.element_size();
      if (n != e.end - e.begin) std::abort();
      if (n > 0) (void)(bytes[0] + bytes[n - 1]);  // first and last byte are inside the mapping
    }
    for (const auto& [key, value] : file.metadata()) (void)(key.size() + value.size());
  });
  return 0;
}
