#pragma once
// `kvlab train`: a Llama-architecture model trained from scratch on one text file, written as a
// standard HF-format checkpoint (config.json, model.safetensors, tokenizer.model) that every other
// command loads.
//
// Data: the text is tokenized once (SentencePiece BPE trained on the same file, unless the output
// folder already holds tokenizer.model). A training sequence is BOS + seq_len - 1 consecutive text
// tokens starting at a uniformly drawn offset; all seq_len - 1 text tokens are predicted, the first
// from BOS alone: the `eval ppl --bos window --ctx seq_len` protocol. Offsets of step s come from a
// generator seeded with (seed, s), so the data order does not depend on where a run was resumed.
//
// Resume: every checkpoint_every steps, <out>/checkpoint/ gets the fp32 weights, AdamW moments and
// step (written to a temporary folder, then renamed, so a kill never leaves a half checkpoint).
// Re-running the same command continues from it, bit-identically to a run that was never stopped.
#include <cstdint>
#include <string>

#include "kvlab/train/train_config.h"

namespace kvlab {

struct TrainRun {
  std::string text;            // training text file
  std::string out;             // output checkpoint folder
  std::string test;            // optional held-out text: final perplexity on it
  int64_t stop_after = -1;     // stop (after checkpointing) once this many steps are done; < 0: run all
  bool progress = true;
};

struct TrainSummary {
  int64_t steps_done = 0;
  int64_t tokens_seen = 0;
  double final_train_loss = 0;    // mean loss over the last min(20, steps) steps
  double test_ppl = 0;            // 0 when no test text was given
  int64_t test_tokens = 0;
  double seconds = 0;             // wall time of this invocation's training loop
  double total_seconds = 0;       // summed over resumed invocations
  int64_t parameters = 0;
  bool resumed = false;
  bool finished = false;          // all steps done and the final checkpoint written
};

TrainSummary train_model(const TrainConfig& config, const TrainRun& run);

}  // namespace kvlab
