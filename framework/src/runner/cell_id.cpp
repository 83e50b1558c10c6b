#include "kvlab/runner/cell_id.h"

#include "kvlab/common/sha256.h"

namespace kvlab {

std::string cell_id(const nlohmann::json& config) { return sha256_hex("kvlab cell\n" + config.dump()).substr(0, 16); }

std::string calibration_key(const nlohmann::json& inputs) {
  return sha256_hex("kvlab calibration\n" + inputs.dump()).substr(0, 16);
}

}  // namespace kvlab
