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

constexpr int64_t kWindowOriginMicros =
    4 * kMicrosPerDay;  // 1970-01-05, microseconds since Unix epoch

// The state of one counter.  Trivially copyable and fixed-size: it lives
// inside a shared-memory slot.  window_micros == 0 marks a counter that has
// never been used (a fresh slot), which is always treated as expired.  The
// meaning of the fields depends on the algorithm (algorithm.hpp); only
// advance() builds states, so window_micros, limit and algorithm always
// describe the rule the state was built for.
struct CounterState {
  int64_t window_start = 0;   // window algorithms: start of the current window;
                              // bucket algorithms: TAT, whole microseconds
  int64_t window_micros = 0;  // window length the state was built for; 0: fresh
  int64_t used = 0;           // window algorithms: units counted in the current window;
                              // bucket algorithms: TAT remainder, in 1/limit us (0 .. limit-1)
  int64_t previous = 0;       // sliding_window: units counted in the previous window
  int64_t limit = 0;          // the rule limit the state was built for
  uint32_t history_ppm = 0;   // moving average of completed windows' usage/limit
                              // (dynamic allocation); halves its weight each window
  uint8_t algorithm = 0;      // the Algorithm the state was built for
  // Not the algorithms': reserved[0] is the owner of the counter-table slot
  // (counter_table.hpp), which CounterPartition keeps across every rewrite
  // of the state.  The algorithms build states with it zero.
  uint8_t reserved[3] = {};
};

// Start of the aligned window of length window_micros that contains now:
// windows start at origin + k*window_micros.  A calendar period (the
// PostgreSQL layer's rules, calendar.hpp) is the window of its own length
// whose origin is its start.
int64_t aligned_window_start(int64_t now, int64_t window_micros,
                             int64_t origin = kWindowOriginMicros) noexcept;

// Whether a state still counts anything, and how it moves from window to
// window, depend on its algorithm: see state_expired() and advance() in
// algorithm.hpp.

}  // namespace rate_limiter::core
