#pragma once
// From a LongBench record to the token ids the model reads, as the benchmark's pred.py builds them:
//   1. fill the task's template (str.format with the record's fields);
//   2. tokenize it with the tokenizer's own special tokens (BOS), untruncated;
//   3. if longer than max_length tokens, keep the first and the last max_length / 2 tokens, decode
//      each half without special tokens and join the two strings (middle truncation: the
//      instructions sit at both ends);
//   4. wrap it in the model's chat template, except for the tasks pred.py leaves plain (trec,
//      triviaqa, samsum, lcc, repobench-p: their prompts are few-shot continuations);
//   5. tokenize again, with the special tokens.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvlab/eval/longbench/records.h"
#include "kvlab/eval/longbench/task_spec.h"

namespace kvlab {
class Tokenizer;
}

namespace kvlab::longbench {

// Chat templates, as plain text around the prompt (the tokenizer adds BOS itself):
//   llama2   "[INST]{prompt}[/INST]"                         (LongBench's own pred.py for Llama-2-chat)
//   llama3   "<|start_header_id|>user<|end_header_id|>\n\n{prompt, trimmed}<|eot_id|>"
//            "<|start_header_id|>assistant<|end_header_id|>\n\n"  (Llama-3-Instruct's template)
//   mistral  "[INST] {prompt} [/INST]"                       (Mistral-Instruct v0.1/v0.2)
//   qwen2    ChatML with a system turn: Qwen2's default system message, or with `auto` the one the
//            checkpoint's own template renders when the conversation has none (SmolLM2's "You are
//            a helpful AI assistant named SmolLM, ..."; none for templates that add none)
//   none     the prompt unchanged (base models)
enum class ChatStyle { None, Llama2, Llama3, Mistral, Qwen2 };
std::vector<std::string> chat_style_names();          // "none", "llama2", "llama3", "mistral", "qwen2"
std::string chat_style_name(ChatStyle s);
ChatStyle parse_chat_style(const std::string& name);  // throws listing the valid names
// The chat template a checkpoint carries: its tokenizer_config.json chat_template (the "default"
// one of a list), or a GGUF file's tokenizer.chat_template; "" when it has none.
std::string checkpoint_chat_template(const std::string& model_path);
// The style of a chat template (recognised by its markers); None for "" or another family.
ChatStyle chat_style_of(const std::string& chat_template);
// The system turn a ChatML template renders when the conversation has none: the literal text of
// its '<|im_start|>system\n...<|im_end|>' string, or "" when it renders none.
std::string chatml_default_system(const std::string& chat_template);
// The style of the checkpoint's (folder or GGUF file) chat template; None when the checkpoint has
// no chat template (a base model) or one of another family.
ChatStyle detect_chat_style(const std::string& model_path);
// "auto" -> detect_chat_style(model_path), anything else -> parse_chat_style.
ChatStyle resolve_chat_style(const std::string& name, const std::string& model_path);
// ChatML's system turn for a chat-template option: with "auto" and a ChatML template, the one the
// template renders (chatml_default_system); otherwise nullopt (Qwen2's default).
std::optional<std::string> resolve_chat_system(const std::string& name, const std::string& model_path);
// `system` is ChatML's system text (nullopt: Qwen2's default; "": no system turn).
std::string apply_chat_template(ChatStyle style, const std::string& prompt,
                                const std::optional<std::string>& system = std::nullopt);

// str.format(**record) for the benchmark's templates: {context}, {input}, {dataset}, {language},
// {length}, {_id}; {{ and }} are literal braces. Throws on any other field.
std::string format_prompt(const std::string& prompt_template, const Record& record);

struct BuiltPrompt {
  std::vector<int32_t> ids;     // what the model reads (special tokens included)
  int64_t untruncated_tokens;   // tokens of the filled template before truncation
  bool truncated = false;
};

// Steps 1-5 above. max_length >= 2.
BuiltPrompt build_prompt(const Tokenizer& tokenizer, const TaskSpec& task, const Record& record, int64_t max_length,
                         ChatStyle chat, const std::optional<std::string>& chat_system = std::nullopt);

}  // namespace kvlab::longbench
