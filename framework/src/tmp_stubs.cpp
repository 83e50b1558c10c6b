// TEMPORARY STUB
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "kvlab/model/safetensors.h"
#include "kvlab/common/error.h"
namespace kvlab {
std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::string& path) { fail("stub"); }
SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir) { fail("stub"); }
bool SafetensorsCheckpoint::contains(const std::string&) const { fail("stub"); }
const SafetensorsEntry& SafetensorsCheckpoint::entry(const std::string&) const { fail("stub"); }
at::Tensor SafetensorsCheckpoint::tensor(const std::string&) const { fail("stub"); }
SafetensorsFile::SafetensorsFile(const std::string&) { fail("stub"); }
SafetensorsFile::~SafetensorsFile() {}
at::Tensor SafetensorsFile::tensor(const std::string&) const { fail("stub"); }
void write_safetensors(const std::string&, const std::vector<std::pair<std::string, at::Tensor>>&, const std::map<std::string, std::string>&) { fail("stub"); }
}
