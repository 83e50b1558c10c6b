#pragma once
// The seam between the experiment runner and the evaluations. A Task is built from its resolved
// parameters (declared once as ParamSpecs, like a method's), runs one model under one cache plan,
// and returns named metrics plus what the cache held. Perplexity, LongBench, passkey and throughput
// are tasks.
//
// Tasks are listed explicitly in task_registry.cpp (the core library is a static archive, so a
// static registrar there could be dropped by the linker); adding a task = one file + one line there.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvlab/model/model_config.h"
#include "kvlab/quant/cache_plan.h"
#include "kvlab/quant/params.h"

namespace kvlab {

class LlamaModel;
class Tokenizer;

struct TaskContext {
  LlamaModel& model;
  const Tokenizer& tokenizer;
  std::string model_dir;
  const CachePlan& plan;      // the method's plan for this model
  std::string base_dir;       // relative data paths in task params resolve against this (the spec's folder)
  bool progress = true;       // progress lines on stderr
  uint64_t seed = 0;          // the experiment cell's seed (sampling, generated prompts)
};

struct Metric {
  std::string name;           // e.g. "ppl", "kl_mean", "longbench/qasper", "passkey/acc"
  double value = 0;
};

struct TaskResult {
  std::vector<Metric> metrics;
  double bits_k = 0, bits_v = 0;   // average bits per element held, from the cache itself
  int64_t cache_bytes = 0;         // bytes the cache held at its largest measured point
  double memory_ratio = 0;         // cache_bytes / bytes of a 16-bit cache of the same tokens
  double seconds = 0;
  nlohmann::json extra = nlohmann::json::object();  // anything else worth keeping (counts, paths)
};

class Task {
 public:
  explicit Task(ParamSet params) : params_(std::move(params)) {}
  virtual ~Task() = default;
  virtual TaskResult run(TaskContext& ctx) = 0;
  const ParamSet& params() const { return params_; }

 private:
  ParamSet params_;
};

struct TaskInfo {
  std::string name;
  std::string description;   // one line
  std::vector<ParamSpec> params;
  std::function<std::unique_ptr<Task>(const ParamSet&)> make;
  // Optional: checks the params against a model before any work (the runner calls it for every
  // cell of a grid), e.g. that input files exist and the context fits. Throws naming the key.
  std::function<void(const ParamSet&, const ModelConfig&, const std::string& base_dir)> check = nullptr;
};

class TaskRegistry {
 public:
  static const TaskRegistry& instance();
  const TaskInfo& find(const std::string& name) const;  // unknown: error listing the valid names
  std::vector<std::string> names() const;               // sorted
  std::unique_ptr<Task> create(const std::string& name, const YAML::Node& params,
                               const std::string& where = "task") const;

 private:
  TaskRegistry();
  std::vector<TaskInfo> tasks_;
};

// The built-in tasks (one function per task file).
TaskInfo perplexity_task_info();
TaskInfo longbench_task_info();   // longbench_task.cpp
TaskInfo passkey_task_info();     // passkey_task.cpp
TaskInfo needle_task_info();      // passkey_task.cpp
TaskInfo throughput_task_info();  // throughput_task.cpp

}  // namespace kvlab
