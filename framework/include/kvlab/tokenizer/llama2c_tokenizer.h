#pragma once
// llama2.c's tokenizer format (tokenizer.bin, e.g. tok512.bin of the tinyllamas models), carried into
// converted checkpoints as `llama2c_tokenizer.bin`.
//   int32 max_token_length; then per token: float32 score, int32 byte length, the bytes.
// Ids 0, 1, 2 are <unk>, <s>, </s>; ids 3..258 are the bytes 0x00..0xFF ("<0xAB>", byte fallback).
// Encoding is SentencePiece-style BPE by score: a space is prepended to non-empty text, each UTF-8
// character becomes its piece (or its bytes' fallback ids), then the adjacent pair whose
// concatenation is the highest-scoring piece is merged, repeatedly, until no pair merges.
#include <array>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

// A SentencePiece-style scored vocabulary: what both llama2.c's tokenizer.bin and a GGUF file with
// tokenizer.ggml.model = llama hold.
struct ScoredVocabulary {
  std::vector<std::string> pieces;   // raw text; SentencePiece's U+2581 already turned into ' '
  std::vector<float> scores;
  std::array<int32_t, 256> byte_ids;  // byte-fallback id of each byte ("<0xAB>" pieces), -1: none
  std::vector<uint8_t> control;       // per id: a control token (<s>, </s>, ...), never merged into
  std::optional<int32_t> bos, eos;
  bool add_space_prefix = true;      // SentencePiece's dummy prefix: a space before the text
  bool add_bos = true, add_eos = false;  // what encode(add_special) adds
  ScoredVocabulary() { byte_ids.fill(-1); }
};

class Llama2cTokenizer : public Tokenizer {
 public:
  // vocab_size: the model's vocabulary (the file does not record it); <= 0 reads to end of file.
  explicit Llama2cTokenizer(const std::string& path, int32_t vocab_size = -1);
  // From a vocabulary in memory (e.g. a GGUF file's); `source` names it in messages.
  Llama2cTokenizer(ScoredVocabulary vocab, std::string source);

  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(v_.pieces.size()); }
  std::optional<int32_t> bos_id() const override { return v_.bos; }
  std::optional<int32_t> eos_id() const override { return v_.eos; }
  std::string kind() const override { return "llama2c"; }

  const std::string& piece(int32_t id) const { return v_.pieces.at(static_cast<size_t>(id)); }
  float score(int32_t id) const { return v_.scores.at(static_cast<size_t>(id)); }

 private:
  void index();
  std::string path_;
  ScoredVocabulary v_;
  std::vector<int16_t> byte_of_;                  // per id: the byte of a byte-fallback piece, or -1
  std::unordered_map<std::string, int32_t> ids_;  // piece -> id (first id wins on duplicates)
};

}  // namespace kvlab
