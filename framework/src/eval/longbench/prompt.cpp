#include "kvlab/eval/longbench/prompt.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/common/strings.h"
#include "kvlab/model/gguf_model.h"
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

std::string checkpoint_chat_template(const std::string& model_path) {
  if (model_path.empty()) return "";  // a model built in memory
  if (is_gguf_path(model_path)) return gguf_chat_template(GgufFile(model_path));
  const auto path = std::filesystem::path(model_path) / "tokenizer_config.json";
  if (!std::filesystem::exists(path)) return "";
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
  return tmpl;
}

ChatStyle chat_style_of(const std::string& tmpl) {
  if (tmpl.find("<|start_header_id|>") != std::string::npos) return ChatStyle::Llama3;
  if (tmpl.find("<|im_start|>") != std::string::npos) return ChatStyle::Qwen2;
  if (tmpl.find("[INST]") != std::string::npos)
    return tmpl.find("<<SYS>>") != std::string::npos ? ChatStyle::Llama2 : ChatStyle::Mistral;
  return ChatStyle::None;
}

std::string chatml_default_system(const std::string& tmpl) {
  // The turn is a string literal in the template; its newline is a real one or Jinja's "\n".
  for (const char* start : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    const size_t at = tmpl.find(start);
    if (at == std::string::npos) continue;
    const size_t from = at + std::strlen(start);
    const size_t end = tmpl.find("<|im_end|>", from);
    if (end == std::string::npos) continue;
    const std::string text = tmpl.substr(from, end - from);
    // A literal, not an expression such as ' + messages[0]['content'] + '.
    if (text.find_first_of("'\"{}") == std::string::npos) return text;
  }
  return "";
}

ChatStyle detect_chat_style(const std::string& model_path) { return chat_style_of(checkpoint_chat_template(model_path)); }

ChatStyle resolve_chat_style(const std::string& name, const std::string& model_path) {
  return name == "auto" ? detect_chat_style(model_path) : parse_chat_style(name);
}

std::optional<std::string> resolve_chat_system(const std::string& name, const std::string& model_path) {
  if (name != "auto") return std::nullopt;
  const std::string tmpl = checkpoint_chat_template(model_path);
  if (chat_style_of(tmpl) != ChatStyle::Qwen2) return std::nullopt;
  return chatml_default_system(tmpl);
}

std::string apply_chat_template(ChatStyle style, const std::string& prompt, const std::optional<std::string>& system) {
  switch (style) {
    case ChatStyle::None: return prompt;
    case ChatStyle::Llama2: return "[INST]" + prompt + "[/INST]";
    case ChatStyle::Llama3:
      return "<|start_header_id|>user<|end_header_id|>\n\n" + trim(prompt) +
             "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatStyle::Mistral: return "[INST] " + prompt + " [/INST]";
    case ChatStyle::Qwen2: {
      const std::string sys = system ? *system : "You are a helpful assistant.";
      return (sys.empty() ? "" : "<|im_start|>system\n" + sys + "<|im_end|>\n") + "<|im_start|>user\n" + prompt +
             "<|im_end|>\n<|im_start|>assistant\n";
    }
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
                         ChatStyle chat, const std::optional<std::string>& chat_system) {
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
  if (task.chat) prompt = apply_chat_template(chat, prompt, chat_system);
  r.ids = tok.encode(prompt, /*add_special=*/true);
  return r;
}

}  // namespace kvlab::longbench
