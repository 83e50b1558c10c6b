#pragma once
// Writes a SentencePiece model file (tokenizer.model: the ModelProto protobuf of sentencepiece's
// sentencepiece_model.proto) for a BPE vocabulary with byte fallback, the kind Llama-2 and Mistral
// ship and GGUF files with tokenizer.ggml.model = llama hold. Only the fields such a model uses are
// written: pieces (text, score, type), trainer_spec (model_type BPE, vocab_size, byte_fallback,
// unk/bos/eos/pad ids) and normalizer_spec (identity, dummy prefix as given, whitespace kept).
#include <cstdint>
#include <string>
#include <vector>

namespace kvlab {

struct SentencePieceModelSpec {
  std::vector<std::string> pieces;  // as SentencePiece spells them (U+2581 for a space)
  std::vector<float> scores;
  std::vector<int64_t> types;       // SentencePiece piece types: 1 normal, 2 unknown, 3 control,
                                    // 4 user-defined, 5 unused, 6 byte
  bool add_dummy_prefix = true;
  int64_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
};

// The serialized ModelProto. Throws kvlab::Error if the lists differ in length.
std::string sentencepiece_model_proto(const SentencePieceModelSpec& spec);

}  // namespace kvlab
