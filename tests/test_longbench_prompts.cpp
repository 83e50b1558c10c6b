// LongBench prompt building: the embedded task facts against the benchmark's own config files,
// template filling, chat templates, middle truncation, and the record loader on real records.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "byte_tokenizer.h"
#include "kvlab/common/error.h"
#include "kvlab/eval/longbench/prompt.h"
#include "kvlab/eval/longbench/records.h"
#include "kvlab/eval/longbench/task_spec.h"
#include "kvlab/eval/stop_tokens.h"
#include "kvlab/model/llama2c_import.h"
#include "kvlab/model/model_config.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "test_helpers.h"

namespace kvlab::longbench {
namespace {

std::string official_config() { return test::shared_dir() + "/data/longbench/official_config"; }

TEST(LongBenchTaskSpec, EmbeddedFactsEqualTheOfficialConfig) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared absent: the official LongBench config is not here";
  std::ifstream p(official_config() + "/dataset2prompt.json"), m(official_config() + "/dataset2maxlen.json");
  const auto prompts = nlohmann::json::parse(p), maxlen = nlohmann::json::parse(m);
  ASSERT_EQ(english_tasks().size(), 16u);
  for (const auto& t : english_tasks()) {
    EXPECT_EQ(t.prompt, prompts.at(t.name).get<std::string>()) << t.name;
    EXPECT_EQ(t.max_new_tokens, maxlen.at(t.name).get<int64_t>()) << t.name;
  }
}

TEST(LongBenchTaskSpec, ChatFirstLineAndETaskSets) {
  for (const auto& t : english_tasks()) {
    const bool plain = t.name == "trec" || t.name == "triviaqa" || t.name == "samsum" || t.name == "lcc" ||
                       t.name == "repobench-p";
    EXPECT_EQ(t.chat, !plain) << t.name;
    EXPECT_EQ(t.first_line, t.name == "trec" || t.name == "triviaqa" || t.name == "samsum") << t.name;
  }
  EXPECT_EQ(e_task_names().size(), 13u);
  EXPECT_EQ(expand_task_list("all").size(), 16u);
  EXPECT_EQ(expand_task_list(" trec, lcc ,trec"), (std::vector<std::string>{"trec", "lcc"}));
  try {
    expand_task_list("trec,gov_reports");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'gov_report'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(find_task("vcsum"), Error);  // Chinese: refused with a reason
}

TEST(LongBenchPrompt, FormatFillsFieldsLikeStrFormat) {
  Record r;
  r.context = "ctx {input} stays";  // values are not re-parsed
  r.input = "q";
  r.length = 42;
  EXPECT_EQ(format_prompt("A {context} B {input} {{x}} {length}", r), "A ctx {input} stays B q {x} 42");
  EXPECT_THROW(format_prompt("{nope}", r), Error);
  EXPECT_THROW(format_prompt("{context", r), Error);
}

TEST(LongBenchPrompt, ChatTemplates) {
  EXPECT_EQ(apply_chat_template(ChatStyle::Llama2, "P"), "[INST]P[/INST]");
  EXPECT_EQ(apply_chat_template(ChatStyle::Mistral, "P"), "[INST] P [/INST]");
  EXPECT_EQ(apply_chat_template(ChatStyle::Llama3, " P\n"),
            "<|start_header_id|>user<|end_header_id|>\n\nP<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(apply_chat_template(ChatStyle::Qwen2, "P"),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nP<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template(ChatStyle::None, "P"), "P");
  EXPECT_THROW(parse_chat_style("llama4"), Error);

  test::TempDir tmp;
  auto detect = [&](const nlohmann::json& config) {
    std::ofstream(tmp / "tokenizer_config.json") << config.dump();
    return detect_chat_style(tmp.str());
  };
  EXPECT_EQ(detect_chat_style(tmp.str()), ChatStyle::None);  // no tokenizer_config.json: a base model
  EXPECT_EQ(detect({{"chat_template", "{{ '<|start_header_id|>' + role }}"}}), ChatStyle::Llama3);
  EXPECT_EQ(detect({{"chat_template", "{{ '<|im_start|>' + role }}"}}), ChatStyle::Qwen2);
  EXPECT_EQ(detect({{"chat_template", "<<SYS>> [INST] x [/INST]"}}), ChatStyle::Llama2);
  EXPECT_EQ(detect({{"chat_template", "[INST] x [/INST]"}}), ChatStyle::Mistral);
  EXPECT_EQ(detect({{"chat_template", nlohmann::json::array({{{"name", "default"}, {"template", "<|im_start|>"}}})}}),
            ChatStyle::Qwen2);
  EXPECT_EQ(detect({{"bos_token", "<s>"}}), ChatStyle::None);
  EXPECT_EQ(resolve_chat_style("mistral", tmp.str()), ChatStyle::Mistral);
}

TEST(LongBenchPrompt, MiddleTruncationKeepsBothEnds) {
  test::ByteTokenizer tok;
  Record r;
  r.context = std::string(100, 'c');
  r.input = "Q?";
  const TaskSpec& trec = find_task("trec");  // "...questions.\n\n{context}\n{input}", no chat template
  const std::string full = format_prompt(trec.prompt, r);
  BuiltPrompt p = build_prompt(tok, trec, r, 1000, ChatStyle::Llama2);
  EXPECT_FALSE(p.truncated);
  EXPECT_EQ(tok.decode(p.ids, true), full);  // trec is never wrapped in a chat template

  p = build_prompt(tok, trec, r, 21, ChatStyle::None);  // half = 10: first and last 10 bytes
  EXPECT_TRUE(p.truncated);
  EXPECT_EQ(p.untruncated_tokens, static_cast<int64_t>(full.size()));
  EXPECT_EQ(tok.decode(p.ids, true), full.substr(0, 10) + full.substr(full.size() - 10));

  const TaskSpec& qasper = find_task("qasper");  // chat-wrapped after truncation
  const std::string q = format_prompt(qasper.prompt, r);
  p = build_prompt(tok, qasper, r, 40, ChatStyle::Llama2);
  EXPECT_EQ(tok.decode(p.ids, true), "[INST]" + q.substr(0, 20) + q.substr(q.size() - 20) + "[/INST]");
  EXPECT_THROW(build_prompt(tok, qasper, r, 1, ChatStyle::None), Error);
}

TEST(LongBenchRecords, LoaderNamesFileLineAndKey) {
  test::TempDir tmp;
  std::ofstream(tmp / "qasper.jsonl")
      << R"({"input": "q", "context": "c", "answers": ["a", 5], "length": 12, "all_classes": null, "_id": "x1"})" << "\n"
      << "\n"
      << R"({"input": "q2", "context": "c2", "answers": ["b"], "dataset": "qasper"})" << "\n";
  const auto rs = load_records(record_file(tmp.str(), "qasper", false));
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].answers, (std::vector<std::string>{"a", "5"}));
  EXPECT_EQ(*rs[0].length, 12);
  EXPECT_EQ(rs[0].id, "x1");
  EXPECT_FALSE(rs[1].length.has_value());
  EXPECT_EQ(load_records(tmp / "qasper.jsonl", 1).size(), 1u);
  EXPECT_EQ(record_file("d", "lcc", true), "d/lcc_e.jsonl");

  std::ofstream(tmp / "bad.jsonl") << R"({"input": "q", "context": "c", "answers": ["a"]})" << "\n"
                                   << R"({"input": "q", "answers": ["a"]})" << "\n";
  try {
    load_records(tmp / "bad.jsonl");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2: missing key 'context'"), std::string::npos) << e.what();
  }
}

// The 237 real records in ../shared, prompted with a real tokenizer (stories260K's): every English
// task loads, every prompt fits the budget after middle truncation, and long ones are truncated.
TEST(LongBenchRecords, RealRecordsPromptWithinBudget) {
  if (!test::have_shared()) GTEST_SKIP() << "../shared absent: no LongBench sample records";
  test::TempDir tmp;
  const std::string models = test::shared_dir() + "/data/models/stories260K";
  convert_llama2c(models + "/stories260K.bin", models + "/tok512.bin", tmp.str());
  auto tok = load_tokenizer(tmp.str());
  const std::string data = test::shared_dir() + "/data/longbench/minilongbench_jsonl_noprompt";
  int64_t records = 0, truncated = 0;
  for (const auto& t : english_tasks()) {
    const auto rs = load_records(record_file(data, t.name, false), 1);
    ASSERT_FALSE(rs.empty()) << t.name;
    for (const auto& r : rs) {
      EXPECT_EQ(r.dataset, t.name);
      const BuiltPrompt p = build_prompt(*tok, t, r, 400, ChatStyle::None);
      ++records;
      truncated += p.truncated;
      // Decoding halves and re-encoding can merge differently; it stays within a few tokens.
      EXPECT_LE(static_cast<int64_t>(p.ids.size()), 400 + 8) << t.name;
      if (p.truncated) {
        EXPECT_GT(p.untruncated_tokens, 400);
      }
    }
  }
  EXPECT_EQ(records, 16);
  EXPECT_GT(truncated, 8);  // LongBench contexts are thousands of tokens long
}

TEST(StopTokens, GenerationConfigOverridesConfigAndTokenizerEosIsAdded) {
  test::TempDir tmp;
  ModelConfig c = test::small_config();
  c.eos_token_ids = {2};
  test::ByteTokenizer tok;  // no EOS of its own
  EXPECT_EQ(stop_token_ids(tmp.str(), c, tok), (std::vector<int64_t>{2}));
  std::ofstream(tmp / "generation_config.json") << R"({"eos_token_id": [7, 9]})";
  EXPECT_EQ(stop_token_ids(tmp.str(), c, tok), (std::vector<int64_t>{7, 9}));
  std::ofstream(tmp / "generation_config.json") << R"({"eos_token_id": "x"})";
  EXPECT_THROW(stop_token_ids(tmp.str(), c, tok), Error);
}

}  // namespace
}  // namespace kvlab::longbench
