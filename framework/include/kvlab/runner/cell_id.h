#pragma once
// A cell's identity: the hash of its fully resolved config (model fingerprint, dtype, device, task
// and method with every parameter, defaults included, and the seed). nlohmann::json keeps object
// keys sorted, so the dump is canonical: the same config gives the same id on every machine, and
// any change of any parameter gives another.
#include <string>

#include <nlohmann/json.hpp>

namespace kvlab {

// 16 hex digits (64 bits) of SHA-256 over config.dump().
std::string cell_id(const nlohmann::json& config);

// The identity of a calibration step's output (its plan): method, step, model, dtype, device and
// the step's resolved parameters. 16 hex digits.
std::string calibration_key(const nlohmann::json& inputs);

}  // namespace kvlab
