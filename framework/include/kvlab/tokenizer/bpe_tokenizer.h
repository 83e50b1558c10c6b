#pragma once
// TEMPORARY STUB (replaced by the helper's implementation)
#include <memory>
#include "kvlab/tokenizer/tokenizer.h"
namespace kvlab {
class BpeTokenizer : public Tokenizer {
 public:
  static std::unique_ptr<BpeTokenizer> from_file(const std::string& path);
};
}
