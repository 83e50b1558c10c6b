// KVmix bit allocation: the reference tiers (the paper's K 2.19 / V 2.38 bits on 32 layers), the
// exact-budget allocator against brute-force enumeration, its errors, and the ratio presets.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <random>

#include "../methods/kvmix/kvmix_allocation.h"
#include "kvlab/common/error.h"
#include "test_helpers.h"

namespace kvlab::kvmix {
namespace {

std::vector<double> random_scores(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> s;
  for (int64_t i = 0; i < n; ++i) s.push_back(static_cast<double>(rng() % 1000003) / 1000.0);
  return s;
}

double mean(const std::vector<int>& bits) {
  return static_cast<double>(std::accumulate(bits.begin(), bits.end(), 0)) / static_cast<double>(bits.size());
}

double cost(const std::vector<double>& scores, const std::vector<int>& bits) {
  double c = 0;
  for (size_t i = 0; i < bits.size(); ++i) c += scores[i] * quantization_error(bits[i]);
  return c;
}

using test::error_of;

ParamSet defaults(const std::string& yaml = "{}") { return ParamSet::resolve(allocation_params(), YAML::Load(yaml), "test"); }

// The paper's headline: on 32 layers, int(0.1 * 32) = 3 important + 3 general layers are high.
// K = (6 * 3 + 26 * 2) / 32 = 2.1875, V = (6 * 4 + 26 * 2) / 32 = 2.375.
TEST(KvmixAllocation, ReferenceTiersOn32LayersGiveTheHeadlineBits) {
  const auto ks = random_scores(32, 1), vs = random_scores(32, 2);
  const auto k = allocate(ks, defaults(), "k"), v = allocate(vs, defaults(), "v");
  EXPECT_EQ(k.mode, "tiers");
  EXPECT_EQ(mean(k.bits), 2.1875);
  EXPECT_EQ(mean(v.bits), 2.375);
  EXPECT_EQ(k.average, 2.1875);
  // The high layers are exactly the six best-scored ones, chosen separately for K and V.
  const auto order = rank_layers(ks);
  for (size_t r = 0; r < 32; ++r) EXPECT_EQ(k.bits[static_cast<size_t>(order[r])], r < 6 ? 3 : 2) << "rank " << r;
  const auto vorder = rank_layers(vs);
  for (size_t r = 0; r < 32; ++r) EXPECT_EQ(v.bits[static_cast<size_t>(vorder[r])], r < 6 ? 4 : 2) << "rank " << r;
  // Top 30% (the paper's KVmix-k2.28v2.56): int(0.3 * 32) = 9 high layers.
  const auto k30 = allocate(ks, defaults("{important_frac: 0.2, general_frac: 0.1}"), "k");
  EXPECT_EQ(mean(k30.bits), 2.0 + 9.0 / 32);
}

TEST(KvmixAllocation, TiersRoundDownAndBreakTiesByLayer) {
  EXPECT_EQ(tier_size(0.1, 32), 3);
  EXPECT_EQ(tier_size(0.1, 30), 3);
  EXPECT_EQ(tier_size(0.1, 9), 0);
  EXPECT_EQ(tier_size(0.3, 10), 3);
  EXPECT_EQ(tier_size(0.29, 100), 29);  // 0.29 * 100 is 28.999999999999996 in doubles
  // Equal scores: the lower layers rank first.
  const std::vector<double> flat(10, 1.0);
  const auto bits = tier_allocation(flat, Tiers{0.1, 0.2, 4, 3, 2});
  EXPECT_EQ(bits, (std::vector<int>{4, 3, 3, 2, 2, 2, 2, 2, 2, 2}));
  EXPECT_EQ(rank_layers({1, 3, 3, 0}), (std::vector<int64_t>{1, 2, 0, 3}));
}

TEST(KvmixAllocation, BudgetHitsEveryReachableTargetExactly) {
  const auto s = random_scores(32, 3);
  const std::vector<int> widths = {2, 3, 4};
  for (int total = 64; total <= 128; ++total) {
    const double target = total / 32.0;
    const auto a = budget_allocation(s, widths, target, "k_avg_bits");
    EXPECT_TRUE(a.exact) << target;
    EXPECT_EQ(a.achieved, target);
    EXPECT_EQ(std::accumulate(a.bits.begin(), a.bits.end(), 0), total);
    // Optimal solutions are monotone: a better-scored layer never has fewer bits.
    for (size_t i = 0; i < s.size(); ++i)
      for (size_t j = 0; j < s.size(); ++j)
        if (s[i] > s[j]) {
          EXPECT_GE(a.bits[i], a.bits[j]) << "target " << target << " layers " << i << ", " << j;
        }
  }
  // The parameter route: "k_avg_bits: 2.5" on 32 layers is exactly 80 bits.
  const auto k = allocate(s, defaults("{k_avg_bits: 2.5}"), "k");
  EXPECT_EQ(k.mode, "budget");
  EXPECT_EQ(mean(k.bits), 2.5);
}

// The dynamic program against enumeration of every assignment of widths to 6 layers.
TEST(KvmixAllocation, BudgetIsOptimalAgainstBruteForce) {
  const std::vector<int> widths = {1, 2, 3, 4, 8};
  for (uint64_t seed : {4, 5, 6}) {
    const auto s = random_scores(6, seed);
    // Least cost for each total over all 5^6 assignments.
    std::map<int, std::pair<double, std::vector<int>>> best;
    for (int code = 0; code < 15625; ++code) {
      int c = code;
      std::vector<int> bits(6);
      for (int l = 0; l < 6; ++l) bits[static_cast<size_t>(l)] = widths[static_cast<size_t>(c % 5)], c /= 5;
      const int total = std::accumulate(bits.begin(), bits.end(), 0);
      const double cst = cost(s, bits);
      auto it = best.find(total);
      if (it == best.end() || cst < it->second.first) best[total] = {cst, bits};
    }
    for (const auto& [total, ref] : best) {
      const auto a = budget_allocation(s, widths, total / 6.0, "v_avg_bits");
      EXPECT_TRUE(a.exact) << total;
      EXPECT_EQ(std::accumulate(a.bits.begin(), a.bits.end(), 0), total);
      EXPECT_NEAR(cost(s, a.bits), ref.first, 1e-12 * ref.first) << "total " << total;
      EXPECT_EQ(a.bits, ref.second) << "total " << total;  // random scores: the optimum is unique
    }
  }
}

// With widths {2, 3} the budget of the reference's K average reproduces the reference's tiers.
TEST(KvmixAllocation, BudgetWithReferenceWidthsEqualsTheTiers) {
  const auto s = random_scores(32, 7);
  const auto tiers = tier_allocation(s, Tiers{});
  EXPECT_EQ(budget_allocation(s, {2, 3}, 2.1875, "k_avg_bits").bits, tiers);
  const auto vt = tier_allocation(s, Tiers{0.1, 0.1, 4, 4, 2});
  EXPECT_EQ(budget_allocation(s, {2, 4}, 2.375, "v_avg_bits").bits, vt);
}

TEST(KvmixAllocation, UnreachableBudgetsAreClear) {
  const auto s = random_scores(32, 8);
  std::string e = error_of([&] { budget_allocation(s, {2, 3, 4}, 1.5, "k_avg_bits"); });
  EXPECT_NE(e.find("k_avg_bits = 1.5"), std::string::npos) << e;
  EXPECT_NE(e.find("2 to 4 bits"), std::string::npos) << e;
  e = error_of([&] { budget_allocation(s, {2, 3, 4}, 4.5, "v_avg_bits"); });
  EXPECT_NE(e.find("v_avg_bits = 4.5"), std::string::npos) << e;
  e = error_of([&] { allocate(s, defaults("{k_avg_bits: 1.5}"), "k"); });
  EXPECT_NE(e.find("reachable averages are 2 to 4"), std::string::npos) << e;
}

// Not a whole total: 2.19 * 6 = 13.14 bits -> the closest total below, 13 (average 13/6).
// Not a sum of the widths: 3.03125 * 32 = 97 bits is odd, widths {2, 4} give even sums -> 96.
TEST(KvmixAllocation, InexactBudgetsTakeTheClosestTotalBelowAndSaySo) {
  const auto s = random_scores(6, 9);
  const auto a = budget_allocation(s, {2, 3, 4}, 2.19, "k_avg_bits");
  EXPECT_FALSE(a.exact);
  EXPECT_EQ(std::accumulate(a.bits.begin(), a.bits.end(), 0), 13);
  EXPECT_DOUBLE_EQ(a.achieved, 13.0 / 6);
  EXPECT_NE(a.note.find("closest total below: 13 bits"), std::string::npos) << a.note;
  const auto s32 = random_scores(32, 10);
  const auto b = budget_allocation(s32, {2, 4}, 3.03125, "v_avg_bits");
  EXPECT_FALSE(b.exact);
  EXPECT_EQ(b.achieved, 3.0);
  EXPECT_NE(b.note.find("96 bits"), std::string::npos) << b.note;
}

TEST(KvmixAllocation, WidthsAndRatioPresets) {
  EXPECT_EQ(parse_widths("4, 2,3,2", "w"), (std::vector<int>{2, 3, 4}));
  EXPECT_NE(error_of([] { parse_widths("2,5", "--k-widths"); }).find("--k-widths: width '5'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_widths("", "w"); }).find("width ''"), std::string::npos);
  // Reference code: 4 -> 0.3, 3 -> 0.2, 2 -> 0.2, 1 -> 0.1; paper: 3/4 -> 0.2, 2 -> 0.1.
  EXPECT_EQ(rpc_ratio("code", 4), 0.3);
  EXPECT_EQ(rpc_ratio("code", 3), 0.2);
  EXPECT_EQ(rpc_ratio("code", 2), 0.2);
  EXPECT_EQ(rpc_ratio("code", 1), 0.1);
  EXPECT_EQ(rpc_ratio("paper", 4), 0.2);
  EXPECT_EQ(rpc_ratio("paper", 3), 0.2);
  EXPECT_EQ(rpc_ratio("paper", 2), 0.1);
  EXPECT_EQ(rpc_ratio("none", 4), 0.0);
  EXPECT_EQ(rpc_ratio("code", 16), 0.0);
  EXPECT_NE(error_of([] { allocate({1, 2}, defaults("{important_frac: 0.7, general_frac: 0.4}"), "k"); }).find("exceed 1"),
            std::string::npos);
}

}  // namespace
}  // namespace kvlab::kvmix
