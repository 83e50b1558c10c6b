#pragma once
// The token ids that end generation for a checkpoint, as HF generate() takes them: the
// eos_token_id of generation_config.json when the checkpoint has one (instruct models list their
// end-of-turn token there, e.g. Llama-3's <|eot_id|>), else config.json's, plus the tokenizer's EOS.
#include <cstdint>
#include <string>
#include <vector>

namespace kvlab {

struct ModelConfig;
class Tokenizer;

std::vector<int64_t> stop_token_ids(const std::string& model_dir, const ModelConfig& config, const Tokenizer& tokenizer);

}  // namespace kvlab
