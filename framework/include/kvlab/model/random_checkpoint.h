#pragma once
// A complete HF-format checkpoint with random weights: config.json, model.safetensors and a
// SentencePiece tokenizer.model trained on a small text. `kvlab make-model` and the experiment
// runner's `make:` model source both write one; deterministic in the seed.
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "kvlab/model/model_config.h"

namespace kvlab {

struct RandomCheckpointOptions {
  uint64_t seed = 0;
  double init_std = 0.02;                   // weights ~ N(0, init_std); norms 1
  c10::ScalarType dtype = c10::kFloat;      // of the stored weights
  std::string tokenizer_text = KVLAB_SOURCE_DIR "/datasets/tiny/tokenizer_corpus.txt";
  int tokenizer_vocab = 512;                // <= config.vocab_size
};

// Writes the checkpoint into out_dir (created); returns the config as written (special token ids
// from the trained tokenizer).
ModelConfig write_random_checkpoint(ModelConfig config, const std::string& out_dir,
                                    const RandomCheckpointOptions& options);

}  // namespace kvlab
