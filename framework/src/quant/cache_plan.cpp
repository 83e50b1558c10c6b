#include "kvlab/quant/cache_plan.h"

#include <cmath>
#include <fmt/format.h>

#include "kvlab/common/error.h"
#include "kvlab/kernels/hadamard.h"
#include "kvlab/kernels/packing.h"

namespace kvlab {

std::string granularity_name(Granularity g) { return g == Granularity::PerToken ? "per-token" : "per-channel"; }

Granularity parse_granularity(const std::string& s, const std::string& where) {
  if (s == "per-token" || s == "token") return Granularity::PerToken;
  if (s == "per-channel" || s == "channel") return Granularity::PerChannel;
  fail("{}: granularity '{}' is not per-token or per-channel", where, s);
}

double TensorQuantSpec::nominal_bits(int64_t head_dim) const {
  if (!quantized()) return 16.0;
  const double param_bits = param == ParamType::F16 ? 16.0 : 32.0;
  const double per_group = symmetric ? param_bits : 2 * param_bits;
  const int64_t g = granularity == Granularity::PerToken ? resolved_group(head_dim) : group;
  const double quantized_bits = bits + per_group / static_cast<double>(g);
  const int64_t dq = quantized_dim(head_dim);
  return (static_cast<double>(dq) * quantized_bits + 16.0 * static_cast<double>(head_dim - dq)) /
         static_cast<double>(head_dim);
}

std::string TensorQuantSpec::describe() const {
  if (!quantized()) return "fp";
  return fmt::format("{}b {} G{}{}{}{}", bits, granularity_name(granularity), group, symmetric ? " sym" : "",
                     param == ParamType::F32 ? " f32-params" : "",
                     exact_count() == 0 ? ""
                     : head_exact_channels.empty() ? fmt::format(" +{} exact ch", exact_count())
                                                   : fmt::format(" +{} exact ch/head", exact_count()));
}

void TensorQuantSpec::validate(int64_t head_dim, const std::string& where) const {
  if (!quantized()) {
    if (bits != 16) fail("{}: bits must be 1, 2, 3, 4, 8 or 16, got {}", where, bits);
    return;
  }
  if (!kernels::valid_bits(bits)) fail("{}: bits must be 1, 2, 3, 4, 8 or 16, got {}", where, bits);
  if (symmetric && bits < 2) fail("{}: symmetric quantization needs at least 2 bits, got {}", where, bits);
  auto check_list = [&](const std::vector<int64_t>& list, const std::string& what) {
    for (size_t i = 0; i < list.size(); ++i) {
      const int64_t c = list[i];
      if (c < 0 || c >= head_dim) fail("{}: exact channel {}{} is outside head_dim {}", where, c, what, head_dim);
      if (i > 0 && c <= list[i - 1]) fail("{}: exact channels{} must be sorted and unique (at {})", where, what, c);
    }
  };
  check_list(exact_channels, "");
  if (!head_exact_channels.empty()) {
    if (!exact_channels.empty()) fail("{}: set exact_channels or head_exact_channels, not both", where);
    for (size_t h = 0; h < head_exact_channels.size(); ++h) {
      const std::string what = fmt::format(" of head {}", h);
      if (head_exact_channels[h].size() != head_exact_channels[0].size())
        fail("{}: head {} has {} exact channels, head 0 has {} (every head needs the same count)", where, h,
             head_exact_channels[h].size(), head_exact_channels[0].size());
      check_list(head_exact_channels[h], what);
    }
  }
  const int64_t dq = quantized_dim(head_dim);
  if (dq <= 0) fail("{}: all {} channels are exact; nothing left to quantize", where, head_dim);
  if (granularity == Granularity::PerToken) {
    const int64_t g = resolved_group(head_dim);
    if (g <= 0 || dq % g != 0) {
      if (exact_count() == 0)
        fail("{}: per-token group size {} does not divide head_dim {} (set group to a divisor of {})", where, group,
             head_dim, head_dim);
      fail("{}: per-token group size {} does not divide the {} quantized channels (head_dim {} minus {} exact)",
           where, group, dq, head_dim, exact_count());
    }
  } else if (group <= 0) {
    fail("{}: per-channel group size must be a positive number of tokens, got {}", where, group);
  }
}

int64_t FlushRule::tokens_to_flush(int64_t n, int64_t stream_unit) const {
  const int64_t u = unit > 0 ? unit : stream_unit;
  switch (kind) {
    case Kind::Never: return 0;
    case Kind::Eager: return n / u * u;
    case Kind::Recent: return std::max<int64_t>(0, n - window) / u * u;
    case Kind::Block: return n / window * window;
    case Kind::Ratio: {
      const auto keep = static_cast<int64_t>(std::floor(ratio * static_cast<double>(n)));
      return (n - keep) / u * u;
    }
  }
  return 0;
}

std::string FlushRule::describe() const {
  switch (kind) {
    case Kind::Never: return "never";
    case Kind::Eager: return "eager";
    case Kind::Recent: return fmt::format("recent({})", window);
    case Kind::Block: return fmt::format("block({})", window);
    case Kind::Ratio: return fmt::format("ratio({:g})", ratio);
  }
  return "?";
}

std::string RotationSpec::describe() const {
  if (!any()) return "";
  return fmt::format("rotate {} (hadamard{})", keys && values ? "K+V" : keys ? "K" : "V",
                     sign_seed ? fmt::format(", signs {}", sign_seed) : "");
}

bool CachePlan::any_quantized() const {
  for (const auto& l : layers)
    if (l.k.quantized() || l.v.quantized()) return true;
  return false;
}

double CachePlan::nominal_bits_k(int64_t head_dim) const {
  double s = 0;
  for (const auto& l : layers) s += l.k.nominal_bits(head_dim);
  return layers.empty() ? 16.0 : s / static_cast<double>(layers.size());
}

double CachePlan::nominal_bits_v(int64_t head_dim) const {
  double s = 0;
  for (const auto& l : layers) s += l.v.nominal_bits(head_dim);
  return layers.empty() ? 16.0 : s / static_cast<double>(layers.size());
}

void CachePlan::validate(int64_t num_layers, int64_t head_dim) const {
  if (static_cast<int64_t>(layers.size()) != num_layers)
    fail("method '{}': plan has {} layers, the model {}", method, layers.size(), num_layers);
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& lp = layers[l];
    const std::string where = fmt::format("method '{}' layer {}", method, l);
    lp.k.validate(head_dim, where + " keys");
    lp.v.validate(head_dim, where + " values");
    if (((lp.rotation.keys && lp.k.quantized()) || (lp.rotation.values && lp.v.quantized())) &&
        !kernels::is_power_of_two(head_dim))
      fail("{}: rotate (Walsh-Hadamard over head_dim) needs a power-of-two head_dim; this model's head_dim is {}",
           where, head_dim);
    for (const auto* pair : {&lp.k_flush, &lp.v_flush}) {
      const bool is_k = pair == &lp.k_flush;
      const TensorQuantSpec& spec = is_k ? lp.k : lp.v;
      const std::string w = where + (is_k ? " keys" : " values");
      if (pair->kind == FlushRule::Kind::Never && spec.quantized())
        fail("{}: quantized stream with flush rule 'never'", w);
      if ((pair->kind == FlushRule::Kind::Recent || pair->kind == FlushRule::Kind::Block) && pair->window < 0)
        fail("{}: window {} must be >= 0", w, pair->window);
      if (pair->kind == FlushRule::Kind::Block) {
        if (pair->window <= 0) fail("{}: block window must be positive, got {}", w, pair->window);
        if (spec.granularity == Granularity::PerChannel && pair->window % spec.group != 0)
          fail("{}: window R = {} must be a multiple of the group size G = {}", w, pair->window, spec.group);
      }
      if (pair->kind == FlushRule::Kind::Ratio && (pair->ratio < 0 || pair->ratio >= 1))
        fail("{}: full-precision ratio {} must be in [0, 1)", w, pair->ratio);
      if (pair->unit > 0 && spec.granularity == Granularity::PerChannel && pair->unit % spec.group != 0)
        fail("{}: flush unit {} must be a multiple of the group size {}", w, pair->unit, spec.group);
    }
  }
}

std::string CachePlan::describe_layer(size_t l) const {
  const auto& lp = layers.at(l);
  return fmt::format("K {} {} | V {} {}{}", lp.k.describe(), lp.k_flush.describe(), lp.v.describe(),
                     lp.v_flush.describe(), lp.rotation.any() ? " | " + lp.rotation.describe() : "");
}

}  // namespace kvlab
