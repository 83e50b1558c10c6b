#pragma once
// Where an experiment's model comes from (a checkpoint folder or GGUF file, a llama2.c file to convert, or a
// random checkpoint to generate) and what identifies it. The identity (fingerprint) depends on the
// content, not the path: the same checkpoint gives the same cell ids on every machine, and a
// changed checkpoint at the same path gives new ones.
#include <string>

#include "kvlab/model/model_config.h"
#include "kvlab/runner/experiment_spec.h"

namespace kvlab {

struct ModelInfo {
  ModelConfig config;        // the architecture (what plans are validated against)
  std::string fingerprint;   // 64 hex digits; "" when the checkpoint is absent
  bool present = true;       // false: absent checkpoint, config from the entry's `shape`
};

// Cheap: reads config.json / a GGUF file's metadata / the llama2.c header / the named shape, and
// fingerprints the inputs.
// An absent checkpoint is an error naming the entry unless `allow_absent` and the entry has a
// `shape` (dry runs of specs for checkpoints not on this machine).
ModelInfo inspect_model(const ModelEntry& entry, bool allow_absent);

// Fingerprint of an HF checkpoint folder: config.json and tokenizer files in full, and each weights
// file's size, first and last MiB.
std::string checkpoint_fingerprint(const std::string& dir);
// Fingerprint of a GGUF file: its header, metadata and tensor infos in full, and the file's size,
// first and last MiB.
std::string gguf_fingerprint(const std::string& path);

// The checkpoint folder to load: the entry's path, or (converted / generated once) a folder
// <cache>/models/<name>-<fingerprint prefix>. Safe when several processes prepare it at once.
std::string prepare_model(const ModelEntry& entry, const ModelInfo& info, const std::string& cache_dir);

}  // namespace kvlab
