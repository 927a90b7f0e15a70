// Fixed windows aligned to a calendar origin.
//
// Every window of length w starts at kWindowOriginMicros + k*w for an integer
// k.  The origin is Monday 1970-01-05 00:00 UTC, so minute windows start on
// the minute, hour windows on the hour, day windows at midnight UTC and week
// windows on Monday midnight UTC.  Alignment (rather than "from the first
// request") makes a window's bounds a pure function of the clock: every
// backend, the status views and a rebuild from the usage table agree on them
// without storing anything.
#pragma once

#include <cstdint>

#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {

constexpr int64_t kWindowOriginMicros = 4 * kMicrosPerDay;  // 1970-01-05, microseconds since Unix epoch

// The state of one counter.  Trivially copyable: it lives inside a
// shared-memory slot.  window_micros == 0 marks a counter that has never been
// used (a fresh slot), which is always treated as expired.
struct CounterState {
  int64_t window_start = 0;   // microseconds since the Unix epoch
  int64_t window_micros = 0;  // the window length this count belongs to
  int64_t used = 0;           // tokens or requests counted in this window
};

// Start of the aligned window of length window_micros that contains now.
int64_t aligned_window_start(int64_t now, int64_t window_micros) noexcept;

// True when the counter no longer counts anything: never used, or its window
// has ended.  Such a counter may be evicted without losing quota state.
bool counter_expired(const CounterState& s, int64_t now) noexcept;

// The counter as it stands at `now` for a rule with window_micros: unchanged
// inside its window; restarted at zero in the current aligned window when the
// window has ended, when the counter is fresh, or when the rule's window
// length changed.  A counter whose window starts in the future (the clock
// stepped back) is kept: stepping the clock back never returns quota.
CounterState current_window(const CounterState& s, int64_t window_micros, int64_t now) noexcept;

}  // namespace rate_limiter::core
