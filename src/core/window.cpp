#include "rate_limiter/core/window.hpp"

namespace rate_limiter::core {

int64_t aligned_window_start(int64_t now, int64_t window_micros, int64_t origin) noexcept {
  int64_t offset = now - origin;
  int64_t k = offset / window_micros;
  if (offset % window_micros < 0) --k;  // floor division for instants before the origin
  return origin + k * window_micros;
}

}  // namespace rate_limiter::core
