// A fixed array whose elements are not constructed.  The decision's arrays
// are sized for the largest call (kMaxAppliedLimits, every level of a deep
// hierarchy) but a call uses a handful of limits: constructing all of them
// cost about 11,000 instructions a call in memset (callgrind).  Only
// elements below the count in use are read, each written whole before (T
// is trivially destructible and copyable).
#pragma once

#include <cstddef>
#include <type_traits>

namespace rate_limiter::core {

template <typename T, std::size_t N>
struct Uninitialized {
  static_assert(std::is_trivially_destructible_v<T> && std::is_trivially_copyable_v<T>);
  union {
    T items[N];
  };
  Uninitialized() noexcept {}
  T& operator[](std::size_t i) noexcept { return items[i]; }
  const T& operator[](std::size_t i) const noexcept { return items[i]; }
};

}  // namespace rate_limiter::core
