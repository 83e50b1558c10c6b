#pragma once
// The YAML file of `kvlab train --config MODEL.yaml`: the Llama architecture, the tokenizer, the
// optimisation schedule. Each section's keys are declared once as ParamSpecs (so unknown keys,
// wrong types and out-of-range values are errors naming file:line and key), e.g.
//
//   model:     {hidden_size: 192, intermediate_size: 512, num_hidden_layers: 6,
//               num_attention_heads: 6, num_key_value_heads: 2, max_position_embeddings: 512}
//   tokenizer: {vocab_size: 2048}
//   train:     {steps: 600, batch_size: 16, seq_len: 256, lr: 3e-3, warmup_steps: 40}
#include <string>

#include <nlohmann/json.hpp>

#include "kvlab/model/model_config.h"
#include "kvlab/quant/params.h"

namespace kvlab {

struct TrainConfig {
  std::string source;          // the file it came from
  ModelConfig model;           // vocab_size = tokenizer vocab; special ids filled once the tokenizer exists
  int tokenizer_vocab = 2048;
  ParamSet train;              // steps, batch_size, seq_len, lr, min_lr, warmup_steps, weight_decay, ...
  ParamSet eval;               // windows: test windows for the final perplexity
  nlohmann::json to_json() const;  // everything, resolved (stored with the checkpoint)
};

TrainConfig load_train_config(const std::string& path);
TrainConfig parse_train_config(const YAML::Node& root, const std::string& source);

}  // namespace kvlab
