#include "pareto_front.h"

#include <algorithm>

#include "kvlab/common/error.h"

namespace kvlab::kvtuner {

std::vector<FrontPoint> additive_pareto_front(const std::vector<std::vector<Option>>& groups) {
  std::vector<FrontPoint> front = {FrontPoint{}};
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].empty()) fail("pareto search: group {} has no options", g);
    std::vector<FrontPoint> next;
    next.reserve(front.size() * groups[g].size());
    for (const auto& f : front)
      for (size_t o = 0; o < groups[g].size(); ++o) {
        FrontPoint p{f.bits + groups[g][o].bits, f.loss + groups[g][o].loss, f.choice};
        p.choice.push_back(o);
        next.push_back(std::move(p));
      }
    // By bits, then loss; stable so that exact ties keep the first-built point.
    std::stable_sort(next.begin(), next.end(), [](const FrontPoint& a, const FrontPoint& b) {
      return a.bits != b.bits ? a.bits < b.bits : a.loss < b.loss;
    });
    front.clear();
    for (auto& p : next)
      if (front.empty() || p.loss < front.back().loss) front.push_back(std::move(p));
  }
  return front;
}

}  // namespace kvlab::kvtuner
