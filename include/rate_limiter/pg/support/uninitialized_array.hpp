// A fixed array whose elements are not constructed: see UninitializedArray.
#pragma once

#include <type_traits>

namespace rate_limiter::pg {

// N elements of T left unconstructed: a call's result holds arrays of
// about 4 kB that each call would otherwise zero (callgrind: ~800
// instructions a call in memset).  Only elements below the matching count
// are ever read, and each is written whole before (T is trivially
// destructible and copyable).
template <typename T, int N>
struct UninitializedArray {
  static_assert(std::is_trivially_destructible_v<T> && std::is_trivially_copyable_v<T>);
  union {
    T items[N];
  };
  UninitializedArray() noexcept {}
  T& operator[](int i) noexcept { return items[i]; }
  const T& operator[](int i) const noexcept { return items[i]; }
};

}  // namespace rate_limiter::pg
