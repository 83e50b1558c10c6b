#include <algorithm>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"
#include "kvlab/eval/task.h"

namespace kvlab {

TaskRegistry::TaskRegistry() {
  // One line per task.
  tasks_.push_back(perplexity_task_info());
  tasks_.push_back(longbench_task_info());
  tasks_.push_back(passkey_task_info());
  tasks_.push_back(needle_task_info());
  tasks_.push_back(throughput_task_info());
}

const TaskRegistry& TaskRegistry::instance() {
  static const TaskRegistry registry;
  return registry;
}

const TaskInfo& TaskRegistry::find(const std::string& name) const {
  for (const auto& t : tasks_)
    if (t.name == name) return t;
  const auto all = names();
  fail("unknown task '{}'{} (valid: {})", name, did_you_mean(name, all), join(all));
}

std::vector<std::string> TaskRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& t : tasks_) out.push_back(t.name);
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<Task> TaskRegistry::create(const std::string& name, const YAML::Node& params,
                                           const std::string& where) const {
  const TaskInfo& info = find(name);
  return info.make(ParamSet::resolve(info.params, params, where + " '" + name + "'"));
}

}  // namespace kvlab
