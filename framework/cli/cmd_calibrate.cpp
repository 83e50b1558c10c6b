// kvlab profile <method> / kvlab search <method>: run a method's offline calibration step
// (kvlab/quant/calibration.h). Its options are derived from the step's declared parameters.
#include <fmt/format.h>

#include <algorithm>

#include "cli_util.h"
#include "commands.h"
#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"
#include "kvlab/quant/calibration.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab::cli {
namespace {

std::string option_name(std::string param) {
  std::replace(param.begin(), param.end(), '_', '-');
  return param;
}

int run_step(const std::string& verb, const Args& args) {
  const auto& reg = CalibrationRegistry::instance();
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    fmt::print("usage: kvlab {} <method> --model DIR --out PATH [options]   (kvlab {} <method> --help)\n\n"
               "methods with a '{}' step: {}\n",
               verb, verb, verb, join(reg.methods_with(verb)));
    return args.empty() ? 2 : 0;
  }
  const CalibrationInfo& step = reg.find(verb, args[0]);
  po::options_description desc(fmt::format("{} {} options", verb, step.method));
  add_model_options(desc);
  desc.add_options()("out", po::value<std::string>()->required(), "where to write the plan")
                    ("quiet", "no progress line");
  for (const auto& p : step.params) {
    const std::string help = fmt::format("{} (default {}{})", p.help, p.default_value.empty() ? "''" : p.default_value,
                                         p.range_text().empty() ? "" : "; " + p.range_text());
    desc.add_options()(option_name(p.name).c_str(), po::value<std::string>(), help.c_str());
  }
  auto vm = parse(Args(args.begin() + 1, args.end()), desc,
                  fmt::format("kvlab {} {} --model DIR --out PATH  ({})", verb, step.method, step.description));
  if (!vm) return 0;

  YAML::Node given(YAML::NodeType::Map);
  for (const auto& p : step.params)
    if (vm->count(option_name(p.name))) given[p.name] = YAML::Load((*vm)[option_name(p.name)].as<std::string>());
  const ParamSet params = ParamSet::resolve(step.params, given, fmt::format("kvlab {} {}", verb, step.method));

  const std::string model_dir = (*vm)["model"].as<std::string>();
  auto tok = load_tokenizer(model_dir);
  LlamaModel model = load_model_from_options(*vm);
  CalibrationContext ctx{model, *tok, model_dir, params, (*vm)["out"].as<std::string>(), !vm->count("quiet")};
  const std::string plan = step.run(ctx);
  fmt::print("wrote {} (use: --method {} --set {}={})\n", plan, step.method, step.plan_param, plan);
  return 0;
}

}  // namespace

int profile(const Args& args) { return run_step("profile", args); }
int search(const Args& args) { return run_step("search", args); }

}  // namespace kvlab::cli
