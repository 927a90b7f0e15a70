#include "rate_limiter/core/window.hpp"

namespace rate_limiter::core {

int64_t aligned_window_start(int64_t now, int64_t window_micros) noexcept {
  int64_t offset = now - kWindowOriginMicros;
  int64_t k = offset / window_micros;
  if (offset % window_micros < 0) --k;  // floor division for instants before the origin
  return kWindowOriginMicros + k * window_micros;
}

bool counter_expired(const CounterState& s, int64_t now) noexcept {
  return s.window_micros == 0 || s.window_start + s.window_micros <= now;
}

CounterState current_window(const CounterState& s, int64_t window_micros, int64_t now) noexcept {
  if (s.window_micros == window_micros && s.window_start + window_micros > now) return s;
  CounterState fresh;
  fresh.window_start = aligned_window_start(now, window_micros);
  fresh.window_micros = window_micros;
  fresh.used = 0;
  return fresh;
}

}  // namespace rate_limiter::core
