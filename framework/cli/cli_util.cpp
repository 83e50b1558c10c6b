#include "cli_util.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/model/dtype.h"

namespace kvlab::cli {

std::optional<po::variables_map> parse(const std::vector<std::string>& args, po::options_description& desc,
                                       const std::string& usage,
                                       const po::positional_options_description* positional) {
  desc.add_options()("help,h", "show this help");
  po::variables_map vm;
  po::command_line_parser parser(args);
  parser.options(desc);
  if (positional) parser.positional(*positional);
  po::store(parser.run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: " << usage << "\n\n" << desc << "\n";
    return std::nullopt;
  }
  po::notify(vm);
  return vm;
}

void add_model_options(po::options_description& desc) {
  desc.add_options()
    ("model", po::value<std::string>()->required(), "checkpoint directory (config.json, *.safetensors, tokenizer) or GGUF file")
    ("dtype", po::value<std::string>()->default_value("float32"), "float32 | bfloat16 | float16")
    ("device", po::value<std::string>()->default_value("cpu"), "cpu | cuda | cuda:N")
    ("threads", po::value<int>()->default_value(0), "CPU threads for LibTorch (0: all cores)");
}

LlamaModel load_model_from_options(const po::variables_map& vm) {
  set_threads(vm["threads"].as<int>());
  LoadOptions opt;
  opt.dtype = parse_dtype(vm["dtype"].as<std::string>());
  opt.device = parse_device(vm["device"].as<std::string>());
  return LlamaModel::load(vm["model"].as<std::string>(), opt);
}

void add_method_options(po::options_description& desc, const std::string& default_method) {
  auto* method = po::value<std::string>();
  if (!default_method.empty()) method->default_value(default_method);
  desc.add_options()
    ("method", method, "KV-cache method (kvlab methods lists them)")
    ("set", po::value<std::vector<std::string>>()->composing(), "method parameter key=value (repeatable)");
}

std::unique_ptr<KvMethod> method_from_options(const po::variables_map& vm) {
  if (!vm.count("method")) {
    if (vm.count("set")) fail("--set needs --method");
    return nullptr;
  }
  const auto sets = vm.count("set") ? vm["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  return MethodRegistry::instance().create(vm["method"].as<std::string>(), parse_assignments(sets), "--method");
}

std::string read_text_file(const std::string& path) {
  check_input_file(path, "text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open text file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kvlab::cli
