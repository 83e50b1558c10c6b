#include <filesystem>

#include "kvlab/common/error.h"
#include "kvlab/model/gguf_model.h"
#include "kvlab/model/model_config.h"
#include "kvlab/tokenizer/bpe_tokenizer.h"
#include "kvlab/tokenizer/llama2c_tokenizer.h"
#include "kvlab/tokenizer/sentencepiece_tokenizer.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  if (is_gguf_path(dir)) return gguf_tokenizer(GgufFile(dir));
  if (!fs::is_directory(dir)) fail("{}: not a directory (expected a checkpoint directory or a GGUF file)", dir);
  // Llama-2/Mistral repos ship both files; tokenizer.model is the original, so it wins.
  if (fs::exists(fs::path(dir) / "tokenizer.model"))
    return std::make_unique<SentencePieceTokenizer>((fs::path(dir) / "tokenizer.model").string());
  if (fs::exists(fs::path(dir) / "tokenizer.json"))
    return BpeTokenizer::from_file((fs::path(dir) / "tokenizer.json").string());
  // Converted llama2.c checkpoints: the file does not record its size, config.json does.
  if (fs::exists(fs::path(dir) / "llama2c_tokenizer.bin")) {
    const int64_t vocab = fs::exists(fs::path(dir) / "config.json") ? ModelConfig::from_dir(dir).vocab_size : -1;
    return std::make_unique<Llama2cTokenizer>((fs::path(dir) / "llama2c_tokenizer.bin").string(),
                                              static_cast<int32_t>(vocab));
  }
  fail("{}: no tokenizer (expected tokenizer.model, tokenizer.json or llama2c_tokenizer.bin)", dir);
}

}  // namespace kvlab
