#pragma once
// Shared plumbing of the subcommands: option parsing with one-line errors and --help, and the
// model-loading options every command that runs a model offers.
#include <boost/program_options.hpp>

#include <optional>
#include <string>
#include <vector>

#include "kvlab/model/llama_model.h"
#include "kvlab/quant/kv_method.h"

namespace kvlab::cli {

namespace po = boost::program_options;

// Parses args against desc (plus positional names); returns nullopt after printing help if --help
// was given. Unknown options and bad values throw with the option named.
std::optional<po::variables_map> parse(const std::vector<std::string>& args, po::options_description& desc,
                                       const std::string& usage,
                                       const po::positional_options_description* positional = nullptr);

// --model, --dtype, --device, --threads
void add_model_options(po::options_description& desc);
LlamaModel load_model_from_options(const po::variables_map& vm);

// --method NAME (default: none, or default_method), --set key=value (repeatable): a KV-cache method.
void add_method_options(po::options_description& desc, const std::string& default_method = "");
// The method --method names with its --set parameters, or nullptr without --method.
std::unique_ptr<KvMethod> method_from_options(const po::variables_map& vm);

std::string read_text_file(const std::string& path);

}  // namespace kvlab::cli
