#include "kvlab/model/random_checkpoint.h"

#include <filesystem>

#include "kvlab/common/error.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/tokenizer/sentencepiece_tokenizer.h"

namespace kvlab {

ModelConfig write_random_checkpoint(ModelConfig c, const std::string& out, const RandomCheckpointOptions& o) {
  if (o.tokenizer_vocab > c.vocab_size)
    fail("tokenizer vocabulary {} exceeds the model's vocab_size {}", o.tokenizer_vocab, c.vocab_size);
  std::filesystem::create_directories(out);
  // The tokenizer first: config.json records its special ids.
  train_sentencepiece(o.tokenizer_text, out + "/tokenizer", o.tokenizer_vocab);
  std::filesystem::remove(out + "/tokenizer.vocab");
  SentencePieceTokenizer tok(out + "/tokenizer.model");
  c.bos_token_id = tok.bos_id();
  c.eos_token_ids = {*tok.eos_id()};
  LoadOptions load;
  load.dtype = o.dtype;
  LlamaModel model = LlamaModel::random(c, o.seed, load, o.init_std);
  model.save(out, o.dtype);
  return c;
}

}  // namespace kvlab
