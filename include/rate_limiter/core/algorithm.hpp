// The four counting algorithms a limit can use, over one fixed-size state.
//
//   fixed_window    `limit` per aligned window of `window_micros` (window.hpp)
//   sliding_window  the weighted estimate over the current and the previous
//                   aligned window:  used + previous * (W - elapsed) / W
//   token_bucket    capacity `burst` (0: `limit`), refilled continuously at
//                   `limit` tokens per `window_micros`
//   gcra            redis-cell's CL.THROTTLE: max_burst = `burst`, count per
//                   period = `limit` per `window_micros`; capacity max_burst+1
//
// Everything is exact integer arithmetic (__int128 where products can exceed
// 64 bits).  Token bucket and GCRA keep a theoretical arrival time (TAT) in
// microseconds plus a remainder in units of 1/limit microsecond, so an
// emission interval window/limit that is not a whole microsecond loses
// nothing.  The formulas, and the sliding window's error bound (at most
// `limit` per aligned window, at most 2*limit - ceil(2*limit/W) in any span
// of W microseconds), are derived in src/core/algorithm.cpp.
//
// All functions are noexcept, allocate nothing and take `now` from the
// caller (the fake clock of the unit tests, the wall clock in PostgreSQL).
// Rules outside the documented bounds are clamped into them (the
// PostgreSQL layer validates rules before they get here).  The query
// functions (available, wait_for, reset_at, usage_ppm, window_position_ppm)
// evaluate advance(rule, state, now), so they are exact for any state.
#pragma once

#include <cstdint>

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/core/window.hpp"

namespace rate_limiter::core {

// Stored in the rule tables as text and in CounterState::algorithm: never
// renumber.
enum class Algorithm : uint8_t {
  FixedWindow = 0,
  SlidingWindow = 1,
  TokenBucket = 2,
  Gcra = 3,
};
constexpr int kAlgorithms = 4;

struct LimitRule {
  int64_t limit = 0;          // 1 .. kMaxQuantity: per window, or refill per window
  int64_t window_micros = 0;  // kMinWindowMicros .. kMaxWindowMicros
  Algorithm algorithm = Algorithm::FixedWindow;
  // token_bucket: capacity (0 means `limit`); gcra: max_burst (0 .. kMaxQuantity-1);
  // ignored by the window algorithms.
  int64_t burst = 0;
  // Window algorithms: windows start at origin + k*window_micros
  // (window.hpp).  A calendar period is given as the fixed window of its
  // own length whose origin is its start.
  int64_t origin = kWindowOriginMicros;
};

// "fixed_window", "sliding_window", "token_bucket", "gcra".
const char* algorithm_name(Algorithm a) noexcept;
// Exact, case-sensitive match of the names above; false for anything else.
bool parse_algorithm(const char* name, std::size_t len, Algorithm* out) noexcept;

// What the result record calls "limit": the most units that can ever be
// available at once (window algorithms: limit; token_bucket: capacity;
// gcra: max_burst + 1).  A bucket's capacity is capped so that draining it
// takes at most 2^62 us (~146,000 years): min(C, floor(2^62 * limit / window)).
int64_t capacity(const LimitRule& rule) noexcept;

// The state at `now` for `rule`.  Rolls windows (keeping the history
// average, see CounterState::history_ppm), and restarts the state from
// nothing when it is fresh or was built for another algorithm, window
// length or limit.  Two exceptions keep a fixed window's live count (a
// change of alignment never hands out fresh quota): a live window on
// another grid moves onto the rule's, and a rule with an origin of its own
// (a calendar period) whose length differs from the live state's carries
// the state's count into its window.  A state whose window or TAT lies in the future (the
// clock stepped back) is kept: stepping the clock back never returns quota.
CounterState advance(const LimitRule& rule, const CounterState& state, int64_t now) noexcept;

// Units that can be taken at `now` from an advanced state: 0 .. capacity.
int64_t available(const LimitRule& rule, const CounterState& state, int64_t now) noexcept;

// Takes n units (1 <= n <= available()) from an advanced state; n outside
// 0 .. available() is clamped into it.  Returns the charge's window: the
// window start the units were counted in (window algorithms), or the
// charge's end on the bucket's timeline (bucket algorithms: the instant by
// which refill has paid it back).  refund() needs it.
int64_t consume(const LimitRule& rule, CounterState* state, int64_t n, int64_t now) noexcept;

// Records n units that were handed out at `now` whatever the state says:
// no clamp to available().  For rebuilding a counter from usage rows, which
// may hold more than the current limit (granted under a higher limit since
// lowered, or from an emergency allowance): the rebuilt counter must hold
// them all, or raising the limit again would hand them out twice.
void charge_unclamped(const LimitRule& rule, CounterState* state, int64_t n, int64_t now) noexcept;

// Microseconds from `now` until available() >= n, for an advanced state:
// 0 when already available, -1 when never (n > capacity).  Exact: at
// now + wait_for() n units are available, at now + wait_for() - 1 they are not.
int64_t wait_for(const LimitRule& rule, const CounterState& state, int64_t n, int64_t now) noexcept;

// The instant (us since the epoch) at which the limiter is back to full
// capacity if nothing more is taken: window algorithms report the end of
// the current window (sliding: of the window after it when the current
// window counted anything); bucket algorithms report when the bucket is full.
int64_t reset_at(const LimitRule& rule, const CounterState& state, int64_t now) noexcept;

// Gives back n units charged in `charge_window` (consume()'s result):
// window algorithms subtract them from the window they were counted in while
// that window is still counted (current or, for sliding_window, previous),
// and never below zero; bucket algorithms move the TAT back by the part of
// the n units refill has not paid back yet (units charged an hour ago on a
// bucket that has refilled since come back as nothing), never before
// `now`.  Nothing happens when the state has been
// rebuilt for another rule since the charge.  The state is not advanced.
// A bucket refund makes the state expire earlier: in a counter table use
// CounterPartition::refund(), which keeps the eviction hint right.
void refund(const LimitRule& rule, CounterState* state, int64_t n, int64_t charge_window,
            int64_t now) noexcept;

// True when the state no longer holds anything: it may be evicted without
// losing quota (fresh; a fixed window that ended: window_start + W <= now; a
// sliding window whose previous window no longer counts: window_start + 2W
// <= now; a bucket that was full before now: TAT < now).  A state advanced
// at `now` is never expired at `now` (a bucket's TAT is then >= now), which
// is what lets CounterPartition::acquire() promise live slots.
bool state_expired(const CounterState& state, int64_t now) noexcept;

// The first instant at which state_expired() is true (INT64_MIN for a fresh
// state): state_expired(s, t) == (t >= expiry_of(s)).
int64_t expiry_of(const CounterState& state) noexcept;

// Usage in parts per million, floor((capacity - available) * 1e6 / capacity):
// fixed_window used/limit, sliding_window estimate/limit (both at most 1e6),
// bucket algorithms the drained fraction of the bucket.
uint32_t usage_ppm(const LimitRule& rule, const CounterState& state, int64_t now) noexcept;

// Position of `now` in the current window in parts per million (window
// algorithms), 0 for bucket algorithms.
uint32_t window_position_ppm(const LimitRule& rule, const CounterState& state,
                             int64_t now) noexcept;

}  // namespace rate_limiter::core
