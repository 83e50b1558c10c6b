#pragma once
// HF tokenizer.json byte-level BPE: the tokenizer of Llama-3, Qwen2/2.5/3 and GPT-2.
//
// Supported tokenizer.json contents (anything else is rejected with a kvlab::Error naming the
// file and key):
//   model          BPE with vocab and merges (merges as "a b" strings or as [a, b] pairs),
//                  ignore_merges, unk_token/fuse_unk/byte_fallback; no dropout, no subword
//                  prefix/suffix.
//   normalizer     null, NFC, or a Sequence of those.
//   pre_tokenizer  ByteLevel (add_prefix_space, use_regex with GPT-2's pattern), Split with the
//                  GPT-2, Llama-3, Qwen2 or \p{N} regex or a plain string (any behavior, invert),
//                  Digits (individual_digits), or a Sequence of those with ByteLevel last. Other
//                  regexes are rejected: they are matched by hand-written code, not by a regex
//                  engine.
//   post_processor null, ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, or a
//                  Sequence of those (only the "single" template matters here).
//   decoder        ByteLevel.
//   added_tokens   matched leftmost-longest in the text before pre-tokenization (special ones
//                  and those with normalized: false on the raw text, the others after the
//                  normalizer), honouring lstrip, rstrip and single_word.
// tokenizer_config.json next to tokenizer.json, when present, names the BOS/EOS tokens
// (bos_token, eos_token). The post-processor decides what encode(add_special) adds, as in HF
// tokenizers and transformers 5; add_bos_token / add_eos_token: true additionally add the token
// where the template lacks it (transformers 4's Llama tokenizer classes did so).
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

class BpeTokenizer : public Tokenizer {
 public:
  // Reads tokenizer.json (and tokenizer_config.json beside it, if any). Throws kvlab::Error
  // naming the file and key on a missing file, bad JSON or an unsupported component.
  static std::unique_ptr<BpeTokenizer> from_file(const std::string& tokenizer_json_path);
  // The same from parsed tokenizer.json (and tokenizer_config.json, if given) content, e.g. built
  // from a GGUF file's metadata; `source` names it in error messages.
  static std::unique_ptr<BpeTokenizer> from_json(const nlohmann::json& tokenizer, const nlohmann::json* config,
                                                 const std::string& source);

  ~BpeTokenizer() override;
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // Thread-safe; the per-word merge cache is shared under a mutex.
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const override;
  // Invalid UTF-8 left by partial byte tokens becomes U+FFFD, as HF's ByteLevel decoder does.
  // Throws kvlab::Error for an id outside [0, vocab_size()) or one no token has.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  // One past the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const override;
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> eos_id() const override;
  std::string kind() const override { return "bpe"; }

  // The token's text as raw bytes (byte-level alphabet undone); nullopt for an unused id.
  std::optional<std::string> token_bytes(int32_t id) const;
  // The id of a token given as raw bytes (a vocabulary entry or an added token), if any.
  std::optional<int32_t> token_id(std::string_view token) const;

  struct Impl;  // defined in bpe_tokenizer.cpp

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvlab
