#include "kvlab/eval/stop_tokens.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kvlab/common/error.h"
#include "kvlab/common/input_file.h"
#include "kvlab/model/model_config.h"
#include "kvlab/tokenizer/tokenizer.h"

namespace kvlab {

std::vector<int64_t> stop_token_ids(const std::string& model_dir, const ModelConfig& config, const Tokenizer& tok) {
  std::vector<int64_t> ids = config.eos_token_ids;
  const auto gen = std::filesystem::path(model_dir) / "generation_config.json";
  if (!model_dir.empty() && std::filesystem::exists(gen)) {
    check_input_file(gen.string(), "generation config", kMaxJsonFileBytes);
    nlohmann::json j;
    try {
      std::ifstream in(gen);
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON ({})", gen.string(), e.what());
    }
    if (j.contains("eos_token_id")) {
      const auto& e = j["eos_token_id"];
      if (e.is_number_integer()) {
        ids = {e.get<int64_t>()};
      } else if (e.is_array()) {
        ids.clear();
        for (const auto& v : e) {
          if (!v.is_number_integer()) fail("{}: key 'eos_token_id' must hold integers", gen.string());
          ids.push_back(v.get<int64_t>());
        }
      } else if (!e.is_null()) {
        fail("{}: key 'eos_token_id' must be an integer or a list", gen.string());
      }
    }
  }
  if (tok.eos_id() && std::find(ids.begin(), ids.end(), *tok.eos_id()) == ids.end()) ids.push_back(*tok.eos_id());
  return ids;
}

}  // namespace kvlab
