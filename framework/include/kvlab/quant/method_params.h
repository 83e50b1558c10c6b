#pragma once
// Parameters several methods share, declared once so that their names, defaults and help agree.
#include <string>
#include <vector>

#include "kvlab/quant/cache_plan.h"
#include "kvlab/quant/params.h"

namespace kvlab::common_params {

inline ParamSpec bits(const std::string& name, int64_t dflt, const std::string& help) {
  return ParamSpec::integer(name, dflt, help, {}, {}, {"1", "2", "3", "4", "8", "16"});
}
inline ParamSpec group(int64_t dflt = 32) {
  return ParamSpec::integer("group", dflt, "group size G (tokens for per-channel, channels for per-token; -1: whole head_dim)", -1);
}
inline ParamSpec param_dtype() {
  return ParamSpec::string("param_dtype", "float16", "storage of scales and zero points", {"float16", "float32"});
}
inline ParamSpec prefill() {
  return ParamSpec::string("prefill", "full-precision",
                           "multi-token forwards: attention reads exact K/V (full-precision, as KIVI/KVmix) or the "
                           "stored cache (quantized, as llama.cpp)",
                           {"full-precision", "quantized"});
}

// Rotated quantization (cache_plan.h: RotationSpec), declared by every quantizing method.
inline std::vector<ParamSpec> rotation() {
  return {ParamSpec::string("rotate", "none",
                            "Walsh-Hadamard rotation over head_dim before quantizing: none, keys (the query is rotated "
                            "alike), values (the output is rotated back) or both",
                            {"none", "keys", "values", "both"}),
          ParamSpec::integer("rotate_signs", 0,
                             "with rotate: 0 = plain normalized Hadamard H/sqrt(d); N > 0 = H diag(s)/sqrt(d) with s a "
                             "fixed random +-1 vector drawn from seed N",
                             0)};
}
// A method's own parameters followed by the rotation ones.
inline std::vector<ParamSpec> with_rotation(std::vector<ParamSpec> params) {
  for (auto& r : rotation()) params.push_back(std::move(r));
  return params;
}
// The method's rotation; rotate_signs without rotate is an error (it would make a distinct cell
// that computes the same thing).
RotationSpec rotation_spec(const ParamSet& p);
// Sets every layer's rotation from the method's parameters.
void apply_rotation(CachePlan& plan, const ParamSet& p);

inline ParamType param_type(const ParamSet& p) {
  return p.string("param_dtype") == "float32" ? ParamType::F32 : ParamType::F16;
}
inline PrefillAttention prefill_mode(const ParamSet& p) {
  return p.string("prefill") == "quantized" ? PrefillAttention::Quantized : PrefillAttention::FullPrecision;
}

}  // namespace kvlab::common_params
