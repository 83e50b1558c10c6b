// TEMPORARY STUB until the BPE helper lands
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "kvlab/common/error.h"
namespace kvlab {
std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::string& path) { fail("stub"); }
}
