#include "kvlab/eval/longbench/task_spec.h"

#include <algorithm>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"

namespace kvlab::longbench {

std::string metric_name(Metric m) {
  switch (m) {
    case Metric::QaF1: return "qa_f1";
    case Metric::RougeL: return "rouge_l";
    case Metric::Classification: return "classification";
    case Metric::Retrieval: return "retrieval";
    case Metric::Count: return "count";
    case Metric::CodeSim: return "code_sim";
  }
  return "?";
}

const std::vector<TaskSpec>& english_tasks() {
  // {name, max_new_tokens, metric, chat, first_line, in_e, prompt}
  static const std::vector<TaskSpec> tasks = {
      {"narrativeqa", 128, Metric::QaF1, true, false, false,
         "You are given a story, which can be either a novel or a movie script, and a question. Answer the question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n"
         "\n"
         "Story: {context}\n"
         "\n"
         "Now, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n"
         "\n"
         "Question: {input}\n"
         "\n"
         "Answer:"},
      {"qasper", 128, Metric::QaF1, true, false, true,
         "You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n"
         "\n"
         "Article: {context}\n"
         "\n"
         " Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n"
         "\n"
         "Question: {input}\n"
         "\n"
         "Answer:"},
      {"multifieldqa_en", 64, Metric::QaF1, true, false, true,
         "Read the following text and answer briefly.\n"
         "\n"
         "{context}\n"
         "\n"
         "Now, answer the following question based on the above text, only give me the answer and do not output any other words.\n"
         "\n"
         "Question: {input}\n"
         "Answer:"},
      {"hotpotqa", 32, Metric::QaF1, true, false, true,
         "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n"
         "\n"
         "The following are given passages.\n"
         "{context}\n"
         "\n"
         "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n"
         "\n"
         "Question: {input}\n"
         "Answer:"},
      {"2wikimqa", 32, Metric::QaF1, true, false, true,
         "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n"
         "\n"
         "The following are given passages.\n"
         "{context}\n"
         "\n"
         "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n"
         "\n"
         "Question: {input}\n"
         "Answer:"},
      {"musique", 32, Metric::QaF1, true, false, false,
         "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n"
         "\n"
         "The following are given passages.\n"
         "{context}\n"
         "\n"
         "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n"
         "\n"
         "Question: {input}\n"
         "Answer:"},
      {"gov_report", 512, Metric::RougeL, true, false, true,
         "You are given a report by a government agency. Write a one-page summary of the report.\n"
         "\n"
         "Report:\n"
         "{context}\n"
         "\n"
         "Now, write a one-page summary of the report.\n"
         "\n"
         "Summary:"},
      {"qmsum", 512, Metric::RougeL, true, false, false,
         "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n"
         "\n"
         "Transcript:\n"
         "{context}\n"
         "\n"
         "Now, answer the query based on the above meeting transcript in one or more sentences.\n"
         "\n"
         "Query: {input}\n"
         "Answer:"},
      {"multi_news", 512, Metric::RougeL, true, false, true,
         "You are given several news passages. Write a one-page summary of all news. \n"
         "\n"
         "News:\n"
         "{context}\n"
         "\n"
         "Now, write a one-page summary of all the news.\n"
         "\n"
         "Summary:"},
      {"trec", 64, Metric::Classification, false, true, true,
         "Please determine the type of the question below. Here are some examples of questions.\n"
         "\n"
         "{context}\n"
         "{input}"},
      {"triviaqa", 32, Metric::QaF1, false, true, true,
         "Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n"
         "\n"
         "{context}\n"
         "\n"
         "{input}"},
      {"samsum", 128, Metric::RougeL, false, true, true,
         "Summarize the dialogue into a few short sentences. The following are some examples.\n"
         "\n"
         "{context}\n"
         "\n"
         "{input}"},
      {"passage_count", 32, Metric::Count, true, false, true,
         "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n"
         "\n"
         "{context}\n"
         "\n"
         "Please enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n"
         "\n"
         "The final answer is: "},
      {"passage_retrieval_en", 32, Metric::Retrieval, true, false, true,
         "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n"
         "\n"
         "{context}\n"
         "\n"
         "The following is an abstract.\n"
         "\n"
         "{input}\n"
         "\n"
         "Please enter the number of the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n"
         "\n"
         "The answer is: "},
      {"lcc", 64, Metric::CodeSim, false, false, true,
         "Please complete the code given below. \n"
         "{context}Next line of code:\n"},
      {"repobench-p", 64, Metric::CodeSim, false, false, true,
         "Please complete the code given below. \n"
         "{context}{input}Next line of code:\n"},
  };
  return tasks;
}

std::vector<std::string> english_task_names() {
  std::vector<std::string> out;
  for (const auto& t : english_tasks()) out.push_back(t.name);
  return out;
}

std::vector<std::string> e_task_names() {
  std::vector<std::string> out;
  for (const auto& t : english_tasks())
    if (t.in_e) out.push_back(t.name);
  return out;
}

bool is_known_task(const std::string& name) {
  const auto& t = english_tasks();
  return std::any_of(t.begin(), t.end(), [&](const TaskSpec& s) { return s.name == name; });
}

const TaskSpec& find_task(const std::string& name) {
  for (const auto& t : english_tasks())
    if (t.name == name) return t;
  static const std::vector<std::string> chinese = {"multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"};
  if (std::find(chinese.begin(), chinese.end(), name) != chinese.end())
    fail("LongBench task '{}' is one of the Chinese tasks, which kvlab does not support (its scorer needs the jieba "
         "segmenter); supported: {}", name, join(english_task_names()));
  fail("unknown LongBench task '{}'{} (valid: {})", name, did_you_mean(name, english_task_names()),
       join(english_task_names()));
}

std::vector<std::string> expand_task_list(const std::string& list) {
  if (list == "all") return english_task_names();
  if (list == "e") return e_task_names();
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(start, end - start);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    if (!name.empty()) {
      find_task(name);  // validates
      if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
    }
    start = end + 1;
  }
  if (out.empty()) fail("empty LongBench task list '{}' (give 'all', 'e' or comma-separated names)", list);
  return out;
}

}  // namespace kvlab::longbench
