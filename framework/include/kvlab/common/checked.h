#pragma once
// Checked arithmetic for sizes read from files and flags. A dimension, count or byte size that comes
// from a user's file is multiplied and added only through these helpers, so that a hostile value is
// refused with one line naming it instead of wrapping around (signed overflow is undefined
// behaviour) or reaching an allocator.
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include "kvlab/common/error.h"

namespace kvlab {

// a * b and a + b, or nullopt when the result does not fit in int64_t.
inline std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// The product of `factors`, or kvlab::Error "<what> = a x b x ... overflows a 64-bit integer".
inline int64_t product_or_fail(std::initializer_list<int64_t> factors, const std::string& what) {
  int64_t r = 1;
  for (int64_t f : factors) {
    if (!checked_mul(r, f).has_value()) {
      std::string terms;
      for (int64_t g : factors) terms += (terms.empty() ? "" : " x ") + std::to_string(g);
      fail("{} = {} overflows a 64-bit integer", what, terms);
    }
    r *= f;
  }
  return r;
}

// a + b, or kvlab::Error "<what> = a + b overflows a 64-bit integer".
inline int64_t sum_or_fail(int64_t a, int64_t b, const std::string& what) {
  const auto r = checked_add(a, b);
  if (!r) fail("{} = {} + {} overflows a 64-bit integer", what, a, b);
  return *r;
}

// Refuses `value` above `limit`: kvlab::Error "<what> is <value>, above the limit of <limit><why>".
inline void require_at_most(int64_t value, int64_t limit, const std::string& what, const std::string& why = "") {
  if (value > limit) fail("{} is {}, above the limit of {}{}", what, value, limit, why);
}

}  // namespace kvlab
