#include <filesystem>

#include "kvlab/common/error.h"
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "kvlab/tokenizer/sentencepiece_tokenizer.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) fail("{}: not a directory (expected a checkpoint directory)", dir);
  // Llama-2/Mistral repos ship both files; tokenizer.model is the original, so it wins.
  if (fs::exists(fs::path(dir) / "tokenizer.model"))
    return std::make_unique<SentencePieceTokenizer>((fs::path(dir) / "tokenizer.model").string());
  if (fs::exists(fs::path(dir) / "tokenizer.json"))
    return BpeTokenizer::from_file((fs::path(dir) / "tokenizer.json").string());
  fail("{}: no tokenizer (expected tokenizer.model or tokenizer.json)", dir);
}

}  // namespace kvlab
