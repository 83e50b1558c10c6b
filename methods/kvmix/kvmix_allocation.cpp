#include "kvmix_allocation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kvlab/common/error.h"
#include "kvlab/common/strings.h"

namespace kvlab::kvmix {
namespace {

std::string widths_text(const std::vector<int>& widths) {
  std::vector<std::string> parts;
  for (int w : widths) parts.push_back(std::to_string(w));
  return "{" + join(parts, ",") + "}";
}

const std::vector<std::string>& bit_choices() {
  static const std::vector<std::string> c = {"1", "2", "3", "4", "8", "16"};
  return c;
}

}  // namespace

std::vector<int64_t> rank_layers(const std::vector<double>& scores) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[static_cast<size_t>(a)] > scores[static_cast<size_t>(b)]; });
  return order;
}

int64_t tier_size(double fraction, int64_t layers) {
  return static_cast<int64_t>(std::floor(fraction * static_cast<double>(layers) + 1e-9));
}

std::vector<int> tier_allocation(const std::vector<double>& scores, const Tiers& t) {
  const auto L = static_cast<int64_t>(scores.size());
  const int64_t n_imp = tier_size(t.important_fraction, L);
  const int64_t n_gen = std::min(L - std::min(L, n_imp), tier_size(t.general_fraction, L));
  std::vector<int> bits(scores.size(), t.rest_bits);
  const auto order = rank_layers(scores);
  for (int64_t r = 0; r < std::min(L, n_imp + n_gen); ++r)
    bits[static_cast<size_t>(order[static_cast<size_t>(r)])] = r < n_imp ? t.important_bits : t.general_bits;
  return bits;
}

double quantization_error(int bits) {
  const double levels = std::ldexp(1.0, bits) - 1.0;
  return 1.0 / (levels * levels);
}

BudgetAllocation budget_allocation(const std::vector<double>& scores, const std::vector<int>& widths, double target,
                                   const std::string& what) {
  if (widths.empty()) fail("{}: no allowed bit widths", what);
  if (scores.empty()) fail("{}: no layers to allocate", what);
  const auto L = static_cast<int64_t>(scores.size());
  const int lo = widths.front(), hi = widths.back();
  if (target < lo - 1e-12 || target > hi + 1e-12)
    fail("{} = {} is not reachable with widths {} on {} layers: reachable averages are {} to {} bits", what, target,
         widths_text(widths), L, lo, hi);

  // Total bits asked for; a total within 1e-9 of a whole number is that number.
  const double raw = target * static_cast<double>(L);
  const double nearest = std::round(raw);
  const bool whole = std::abs(raw - nearest) <= 1e-9 * std::max(1.0, raw);
  const auto wanted = static_cast<int64_t>(whole ? nearest : std::floor(raw));

  // best[i][t]: least cost of layers ranked i..L-1 holding t bits in total (inf: not reachable).
  const auto order = rank_layers(scores);
  const int64_t T = hi * L;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(static_cast<size_t>((L + 1) * (T + 1)), inf);  // [(L + 1) * (T + 1)]
  auto at = [&](int64_t i, int64_t t) -> double& { return best[static_cast<size_t>(i * (T + 1) + t)]; };
  at(L, 0) = 0;
  for (int64_t i = L - 1; i >= 0; --i) {
    const double s = scores[static_cast<size_t>(order[static_cast<size_t>(i)])];
    for (int64_t t = 0; t <= T; ++t)
      for (int w : widths)
        if (w <= t && at(i + 1, t - w) < inf) at(i, t) = std::min(at(i, t), s * quantization_error(w) + at(i + 1, t - w));
  }
  int64_t total = wanted;
  while (total >= 0 && at(0, total) == inf) --total;  // all-narrowest (lo * L <= wanted) is always reachable

  BudgetAllocation out;
  out.target = target;
  out.bits.assign(scores.size(), lo);
  int64_t t = total;
  for (int64_t i = 0; i < L; ++i) {
    const size_t layer = static_cast<size_t>(order[static_cast<size_t>(i)]);
    const double s = scores[layer];
    const double tol = 1e-12 * std::max(1.0, std::abs(at(i, t)));
    for (auto w = widths.rbegin(); w != widths.rend(); ++w) {  // widest first: ties favour higher rank
      if (*w > t || at(i + 1, t - *w) == inf) continue;
      if (s * quantization_error(*w) + at(i + 1, t - *w) <= at(i, t) + tol) {
        out.bits[layer] = *w;
        t -= *w;
        break;
      }
    }
  }
  out.achieved = static_cast<double>(total) / static_cast<double>(L);
  out.exact = whole && total == wanted;
  if (!out.exact)
    out.note = fmt::format(
        "{} = {} asks for {:g} bits over {} layers, not a sum of {} widths from {}; using the closest total "
        "below: {} bits (average {:g})",
        what, target, raw, L, L, widths_text(widths), total, out.achieved);
  return out;
}

std::vector<int> parse_widths(const std::string& text, const std::string& where) {
  std::vector<int> out;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(begin, end - begin);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item != "1" && item != "2" && item != "3" && item != "4" && item != "8")
      fail("{}: width '{}' in '{}' is not one of 1, 2, 3, 4, 8", where, item, text);
    out.push_back(std::stoi(item));
    begin = end + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::string> ratio_presets() { return {"code", "paper", "none"}; }

double rpc_ratio(const std::string& preset, int bits) {
  if (bits >= 16) return 0.0;
  if (preset == "none") return 0.0;
  if (preset == "code") return bits >= 4 ? 0.3 : bits >= 2 ? 0.2 : 0.1;
  if (preset == "paper") return bits >= 3 ? 0.2 : 0.1;
  fail("ratio_preset '{}' is not one of {}", preset, join(ratio_presets()));
}

std::vector<ParamSpec> allocation_params() {
  auto bits = [](const std::string& name, int64_t dflt, const std::string& help) {
    return ParamSpec::integer(name, dflt, help, {}, {}, bit_choices());
  };
  return {
      ParamSpec::real("important_frac", 0.1, "tiers: share of layers (by score, rounded down) in the important tier", 0, 1),
      ParamSpec::real("general_frac", 0.1, "tiers: share of layers in the general tier (the next ones by score)", 0, 1),
      bits("k_bits_important", 3, "tiers: K bits of important layers"),
      bits("k_bits_general", 3, "tiers: K bits of general layers"),
      bits("k_bits_rest", 2, "tiers: K bits of the other layers"),
      bits("v_bits_important", 4, "tiers: V bits of important layers"),
      bits("v_bits_general", 4, "tiers: V bits of general layers"),
      bits("v_bits_rest", 2, "tiers: V bits of the other layers"),
      ParamSpec::real("k_avg_bits", 0, "budget: exact average K bits over layers, allocated optimally (0: use the tiers)", 0, 16),
      ParamSpec::real("v_avg_bits", 0, "budget: exact average V bits over layers (0: use the tiers)", 0, 16),
      ParamSpec::string("k_widths", "2,3,4", "budget: allowed K widths, comma-separated (of 1, 2, 3, 4, 8)"),
      ParamSpec::string("v_widths", "2,3,4", "budget: allowed V widths, comma-separated (of 1, 2, 3, 4, 8)"),
      ParamSpec::string("ratio_preset", "code",
                        "full-precision ratio by bit width: code (4:0.3, 3:0.2, 2:0.2, 1:0.1), paper (3/4:0.2, "
                        "2:0.1), none (w/o RPC)",
                        ratio_presets()),
  };
}

TensorAllocation allocate(const std::vector<double>& scores, const ParamSet& p, const std::string& which) {
  TensorAllocation out;
  const double target = p.real(which + "_avg_bits");
  if (target > 0) {
    out.mode = "budget";
    out.widths = parse_widths(p.string(which + "_widths"), "kvmix parameter '" + which + "_widths'");
    out.budget = budget_allocation(scores, out.widths, target, which + "_avg_bits");
    out.bits = out.budget.bits;
    out.average = out.budget.achieved;
    return out;
  }
  out.mode = "tiers";
  out.tiers.important_fraction = p.real("important_frac");
  out.tiers.general_fraction = p.real("general_frac");
  if (out.tiers.important_fraction + out.tiers.general_fraction > 1 + 1e-12)
    fail("kvmix: important_frac {} + general_frac {} exceed 1", out.tiers.important_fraction,
         out.tiers.general_fraction);
  out.tiers.important_bits = static_cast<int>(p.integer(which + "_bits_important"));
  out.tiers.general_bits = static_cast<int>(p.integer(which + "_bits_general"));
  out.tiers.rest_bits = static_cast<int>(p.integer(which + "_bits_rest"));
  out.bits = tier_allocation(scores, out.tiers);
  out.average = scores.empty() ? 0.0
                               : static_cast<double>(std::accumulate(out.bits.begin(), out.bits.end(), 0)) /
                                     static_cast<double>(scores.size());
  return out;
}

std::vector<std::string> given_allocation_params(const ParamSet& p) {
  std::vector<std::string> out;
  for (const auto& spec : allocation_params())
    if (spec.name != "ratio_preset" && p.was_given(spec.name)) out.push_back(spec.name);
  return out;
}

}  // namespace kvlab::kvmix
