#pragma once
// KVmix's bit allocation (METHODS.md section 4): layers are ranked by importance score, separately
// for K and for V, and given bit widths either by the reference tiers (top 10% "important", next
// 10% "general", the rest "unimportant"; K 3/3/2, V 4/4/2 bits) or, going beyond the reference, by
// an exact average-bit budget solved optimally. Also the per-layer full-precision ratio ("recent
// pivotal context") that depends on a layer's bit width.
#include <cstdint>
#include <string>
#include <vector>

#include "kvlab/quant/params.h"

namespace kvlab::kvmix {

// Layer indices ordered by score, highest first; equal scores keep the lower layer first.
std::vector<int64_t> rank_layers(const std::vector<double>& scores);

// floor(fraction * layers), as the reference's int(0.1 * L); a product within 1e-9 below an
// integer counts as that integer (so 0.29 * 100 is 29, not 28 through rounding of 0.29).
int64_t tier_size(double fraction, int64_t layers);

struct Tiers {
  double important_fraction = 0.1;
  double general_fraction = 0.1;
  int important_bits = 3, general_bits = 3, rest_bits = 2;
};

// Bits per layer: the top tier_size(important) layers by score get important_bits, the next
// tier_size(general) get general_bits, the rest rest_bits.
std::vector<int> tier_allocation(const std::vector<double>& scores, const Tiers& tiers);

// Relative mean squared error of b-bit uniform quantization of a range: the step is range / (2^b - 1)
// and the error of round-to-nearest is step^2 / 12, so err(b) = 1 / (2^b - 1)^2 up to a constant.
double quantization_error(int bits);

struct BudgetAllocation {
  std::vector<int> bits;    // per layer
  double target = 0;        // the requested average
  double achieved = 0;      // sum(bits) / layers
  bool exact = true;        // achieved == target
  std::string note;         // why not exact, when not
};

// Widths b_l from `widths` with sum_l b_l = target * L, minimising sum_l score_l * err(b_l)
// (a first-order estimate of the loss increase: importance times quantization error), solved
// exactly by dynamic programming over layers and total bits. Ties go to the wider width for the
// higher-ranked layer (rank_layers order), so the result is deterministic.
// A target whose total target * L is not a whole number, or not a sum of L allowed widths, gets the
// closest reachable total below it (exact = false, note says so). A target outside
// [min width, max width] is an error naming `what` (e.g. "k_avg_bits") and the reachable range.
BudgetAllocation budget_allocation(const std::vector<double>& scores, const std::vector<int>& widths, double target,
                                   const std::string& what);

// "2,3,4" -> {2, 3, 4}: sorted, unique, each one of 1, 2, 3, 4, 8. Errors name `where`.
std::vector<int> parse_widths(const std::string& text, const std::string& where);

// Share of a layer's full-precision part that stays exact at every flush, by bit width.
//   code:  the reference code's table, 4 -> 0.3, 3 -> 0.2, 2 -> 0.2, 1 -> 0.1
//   paper: the paper's text, 0.2 for 3- and 4-bit layers, 0.1 for 2-bit (and 1-bit) layers
//   none:  0 (the paper's "w/o RPC" ablation)
// 8-bit layers (outside both tables) take the 4-bit ratio; 16-bit layers are not quantized.
double rpc_ratio(const std::string& preset, int bits);
std::vector<std::string> ratio_presets();

// The allocation parameters, shared by the method and its profile step (declared once).
std::vector<ParamSpec> allocation_params();

// The allocation of one of K or V from scores under `p` (allocation_params): the exact budget when
// <which>_avg_bits > 0, the tiers otherwise. which: "k" or "v".
struct TensorAllocation {
  std::vector<int> bits;
  std::string mode;          // "tiers" or "budget"
  double average = 0;        // achieved average bits
  BudgetAllocation budget;   // filled in budget mode
  std::vector<int> widths;   // budget mode: the allowed widths
  Tiers tiers;               // tiers mode: what was used
};
TensorAllocation allocate(const std::vector<double>& scores, const ParamSet& p, const std::string& which);

// Whether `p` asks for any allocation setting (so it must come from scores, not a plan's bits).
std::vector<std::string> given_allocation_params(const ParamSet& p);

}  // namespace kvlab::kvmix
