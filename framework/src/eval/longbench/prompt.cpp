#include "kvlab/eval/longbench/prompt.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/strings.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::longbench {
namespace {

// Jinja's trim: white space off both ends.
std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

std::vector<std::string> chat_style_names() { return {"none", "llama2", "llama3", "mistral", "qwen2"}; }

std::string chat_style_name(ChatStyle s) {
  switch (s) {
    case ChatStyle::None: return "none";
    case ChatStyle::Llama2: return "llama2";
    case ChatStyle::Llama3: return "llama3";
    case ChatStyle::Mistral: return "mistral";
    case ChatStyle::Qwen2: return "qwen2";
  }
  return "?";
}

ChatStyle parse_chat_style(const std::string& name) {
  const auto names = chat_style_names();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<ChatStyle>(i);
  fail("unknown chat template '{}'{} (valid: auto, {})", name, did_you_mean(name, names), join(names));
}

ChatStyle detect_chat_style(const std::string& model_dir) {
  if (model_dir.empty()) return ChatStyle::None;  // a model built in memory
  const auto path = std::filesystem::path(model_dir) / "tokenizer_config.json";
  if (!std::filesystem::exists(path)) return ChatStyle::None;
  check_input_file(path.string(), "tokenizer config", kMaxJsonFileBytes);
  nlohmann::json j;
  try {
    std::ifstream in(path);
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
  std::string tmpl;
  if (j.contains("chat_template")) {
    const auto& t = j["chat_template"];
    if (t.is_string()) {
      tmpl = t.get<std::string>();
    } else if (t.is_array()) {  // [{name, template}, ...]: the "default" one
      for (const auto& e : t)
        if (e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
          tmpl = e["template"].get<std::string>();
    }
  }
  if (tmpl.find("<|start_header_id|>") != std::string::npos) return ChatStyle::Llama3;
  if (tmpl.find("<|im_start|>") != std::string::npos) return ChatStyle::Qwen2;
  if (tmpl.find("[INST]") != std::string::npos)
    return tmpl.find("<<SYS>>") != std::string::npos ? ChatStyle::Llama2 : ChatStyle::Mistral;
  return ChatStyle::None;
}

ChatStyle resolve_chat_style(const std::string& name, const std::string& model_dir) {
  return name == "auto" ? detect_chat_style(model_dir) : parse_chat_style(name);
}

std::string apply_chat_template(ChatStyle style, const std::string& prompt) {
  switch (style) {
    case ChatStyle::None: return prompt;
    case ChatStyle::Llama2: return "[INST]" + prompt + "[/INST]";
    case ChatStyle::Llama3:
      return "<|start_header_id|>user<|end_header_id|>\n\n" + trim(prompt) +
             "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatStyle::Mistral: return "[INST] " + prompt + " [/INST]";
    case ChatStyle::Qwen2:
      return "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + prompt +
             "<|im_end|>\n<|im_start|>assistant\n";
  }
  return prompt;
}

std::string format_prompt(const std::string& tmpl, const Record& r) {
  std::string out;
  out.reserve(tmpl.size() + r.context.size() + r.input.size());
  for (size_t i = 0; i < tmpl.size(); ++i) {
    const char c = tmpl[i];
    if ((c == '{' || c == '}') && i + 1 < tmpl.size() && tmpl[i + 1] == c) {
      out.push_back(c);
      ++i;
      continue;
    }
    if (c == '}') fail("prompt template: single '}}' at offset {}", i);
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    const size_t end = tmpl.find('}', i);
    if (end == std::string::npos) fail("prompt template: '{{' at offset {} is not closed", i);
    const std::string field = tmpl.substr(i + 1, end - i - 1);
    if (field == "context") out += r.context;
    else if (field == "input") out += r.input;
    else if (field == "dataset") out += r.dataset;
    else if (field == "language") out += r.language;
    else if (field == "_id") out += r.id;
    else if (field == "length" && r.length) out += std::to_string(*r.length);
    else if (field == "length") fail("prompt template: the record has no length for '{{length}}'");
    else fail("prompt template: unknown field '{{{}}}' (valid: context, input, dataset, language, length, _id)", field);
    i = end;
  }
  return out;
}

BuiltPrompt build_prompt(const Tokenizer& tok, const TaskSpec& task, const Record& record, int64_t max_length,
                         ChatStyle chat) {
  if (max_length < 2) fail("LongBench: max_length {} is too small (the prompt budget in tokens)", max_length);
  std::string prompt = format_prompt(task.prompt, record);
  const std::vector<int32_t> ids = tok.encode(prompt, /*add_special=*/true);
  BuiltPrompt r;
  r.untruncated_tokens = static_cast<int64_t>(ids.size());
  if (r.untruncated_tokens > max_length) {
    const auto half = static_cast<std::ptrdiff_t>(max_length / 2);
    prompt = tok.decode(std::vector<int32_t>(ids.begin(), ids.begin() + half), /*skip_special=*/true) +
             tok.decode(std::vector<int32_t>(ids.end() - half, ids.end()), /*skip_special=*/true);
    r.truncated = true;
  }
  if (task.chat) prompt = apply_chat_template(chat, prompt);
  r.ids = tok.encode(prompt, /*add_special=*/true);
  return r;
}

}  // namespace kvlab::longbench
