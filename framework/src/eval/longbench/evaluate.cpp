#include "kvlab/eval/longbench/evaluate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "kvlab/cache/quantized_layer_cache.h"
#include "kvlab/common/error.h"
#include "kvlab/common/progress.h"
#include "kvlab/eval/generate.h"
#include "kvlab/eval/longbench/records.h"
#include "kvlab/model/llama_model.h"
#include "kvlab/tokenizer/tokenizer.h"
#include "../../tokenizer/unicode.h"

namespace kvlab::longbench {

double EvalResult::bits_k() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.keys.total()) / elements_per_kind : 0.0;
}
double EvalResult::bits_v() const {
  return elements_per_kind > 0 ? 8.0 * static_cast<double>(bytes.values.total()) / elements_per_kind : 0.0;
}
double EvalResult::memory_ratio() const {
  return elements_per_kind > 0 ? static_cast<double>(bytes.total()) / (2.0 * 2.0 * elements_per_kind) : 0.0;
}

namespace {

struct TaskData {
  const TaskSpec* spec;
  std::string path;
  std::vector<Record> records;
};

// Batches of record indices: equal prompt lengths only, at most `batch` each, in order of first appearance.
std::vector<std::vector<size_t>> equal_length_batches(const std::vector<BuiltPrompt>& prompts, int64_t batch) {
  std::map<size_t, std::vector<size_t>> by_length;
  std::vector<size_t> order;  // lengths in order of first appearance
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto& group = by_length[prompts[i].ids.size()];
    if (group.empty()) order.push_back(prompts[i].ids.size());
    group.push_back(i);
  }
  std::vector<std::vector<size_t>> out;
  for (size_t len : order) {
    const auto& group = by_length[len];
    for (size_t s = 0; s < group.size(); s += static_cast<size_t>(batch))
      out.emplace_back(group.begin() + static_cast<std::ptrdiff_t>(s),
                       group.begin() + static_cast<std::ptrdiff_t>(std::min(group.size(), s + static_cast<size_t>(batch))));
  }
  return out;
}

}  // namespace

EvalResult evaluate_longbench(LlamaModel& model, const Tokenizer& tok, const CachePlan& plan, const EvalOptions& opt) {
  const ModelConfig& c = model.config();
  plan.validate(c.num_hidden_layers, c.head_dim);
  if (opt.tasks.empty()) fail("LongBench: no tasks to evaluate");
  if (opt.batch < 1) fail("LongBench: batch must be >= 1, got {}", opt.batch);
  if (!opt.out_dir.empty()) std::filesystem::create_directories(opt.out_dir);

  // Read every task first, so a missing or malformed file fails before any generation.
  std::vector<TaskData> data;
  int64_t total_records = 0;
  for (const auto& name : opt.tasks) {
    TaskData d{&find_task(name), record_file(opt.data_dir, name, opt.longbench_e), {}};
    d.records = load_records(d.path, opt.max_samples);
    if (d.records.empty()) fail("LongBench: '{}' holds no records", d.path);
    total_records += static_cast<int64_t>(d.records.size());
    data.push_back(std::move(d));
  }

  EvalResult result;
  Progress progress("eval longbench " + plan.method, total_records, "records", "tok", 10.0,
                    opt.progress ? stderr : nullptr);
  for (const TaskData& d : data) {
    const TaskSpec& spec = *d.spec;
    TaskRun run;
    run.max_new_tokens = opt.max_new_tokens > 0 ? opt.max_new_tokens : spec.max_new_tokens;
    run.max_length = opt.max_length > 0 ? opt.max_length : c.max_position_embeddings - run.max_new_tokens;
    if (run.max_length < 2)
      fail("LongBench task {}: no room for a prompt: the model's context ({}) minus the generation length ({}) "
           "leaves {} tokens; give max_length explicitly",
           spec.name, c.max_position_embeddings, run.max_new_tokens, run.max_length);

    GenerateOptions gen;
    gen.max_new_tokens = run.max_new_tokens;
    gen.stop_ids = opt.stop_ids;
    if (spec.name == "samsum") {
      // pred.py: stop also at a newline, and generate at least one token (min_length = prompt + 1).
      const auto nl = tok.encode("\n", false);
      if (!nl.empty()) gen.stop_ids.push_back(nl.back());
      gen.min_new_tokens = 1;
    }

    std::vector<BuiltPrompt> prompts;
    for (const Record& r : d.records) {
      prompts.push_back(build_prompt(tok, spec, r, run.max_length, opt.chat, opt.chat_system));
      run.truncated += prompts.back().truncated ? 1 : 0;
    }
    std::vector<Prediction> predictions(d.records.size());
    for (const auto& batch : equal_length_batches(prompts, opt.batch)) {
      std::vector<std::vector<int64_t>> ids;
      for (size_t i : batch) ids.emplace_back(prompts[i].ids.begin(), prompts[i].ids.end());
      KvCache cache = make_cache(plan, multi_token_mode(plan.prefill));
      const GenerateResult g = greedy_generate(model, cache, ids, gen);

      const CacheBytes bytes = cache.bytes();
      result.bytes += bytes;
      result.max_cache_bytes = std::max(result.max_cache_bytes, bytes.total());
      result.elements_per_kind +=
          c.num_hidden_layers * c.num_key_value_heads * c.head_dim * cache.length() * static_cast<int64_t>(batch.size());
      run.prefill_seconds += g.prefill_seconds;
      run.decode_seconds += g.decode_seconds;

      int64_t tokens = 0;
      for (size_t k = 0; k < batch.size(); ++k) {
        const size_t i = batch[k];
        const Record& r = d.records[i];
        const std::vector<int32_t> out(g.tokens[k].begin(), g.tokens[k].end());
        // As Python's str: bytes left invalid by a cut multi-byte character become U+FFFD, so the
        // score computed here is the one a re-read of the written file gives.
        const std::string text = unicode::utf8_lossy(tok.decode(out, /*skip_special=*/true));
        predictions[i] = {text, r.answers, r.all_classes, r.length, r.id};
        run.prompt_tokens += static_cast<int64_t>(ids[k].size());
        run.generated_tokens += static_cast<int64_t>(out.size());
        tokens += static_cast<int64_t>(ids[k].size() + out.size());
      }
      progress.advance(static_cast<int64_t>(batch.size()), spec.name, tokens);
    }
    run.score = score_task(spec, predictions, d.path);
    if (!opt.out_dir.empty())
      write_predictions((std::filesystem::path(opt.out_dir) / (spec.name + ".jsonl")).string(), predictions);
    result.tasks.push_back(std::move(run));
  }
  std::vector<TaskScore> scores;
  for (const auto& t : result.tasks) scores.push_back(t.score);
  result.average = average_score(scores);
  result.seconds = progress.elapsed_s();
  progress.finish(fmt::format("avg {:.2f}", result.average));
  return result;
}

}  // namespace kvlab::longbench
