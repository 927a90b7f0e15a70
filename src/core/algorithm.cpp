// The four counting algorithms over one CounterState (see algorithm.hpp).
//
// Window algorithms (fixed_window, sliding_window)
//   State: window_start (aligned, window.hpp), used (this window), previous
//   (sliding: the window before), history_ppm.
//   fixed_window    available = max(0, limit - used).
//   sliding_window  estimate(now) = used + ceil(previous * (W - e) / W), with
//                   e = now - window_start in [0, W); available =
//                   max(0, limit - estimate).  On rolling by exactly one
//                   window previous = the finished window's used, by two or
//                   more previous = 0.
//
//   Sliding-window error bound.  (1) In every aligned window at most `limit`
//   units are admitted: estimate >= used.  (2) In any span [t, t + W) of W
//   microseconds fewer than 2*limit units are admitted, exactly:
//       admitted([t, t + W)) <= 2*limit - ceil(2*limit / W)
//   Proof: a span that is not an aligned window covers the last d
//   microseconds of window k-1 (1 <= d <= W-1) and the first W-d of window k.
//   Window k-1 admitted at most p = previous(k) <= limit units in total.  Let
//   the last admission in window k happen at elapsed e <= W - d - 1; after
//   it used(k) <= limit - ceil(p (W - e) / W) <= limit - ceil(p (d + 1) / W).
//   So the span holds at most p + limit - ceil(p (d + 1) / W)
//   = limit + floor(p (W - d - 1) / W) <= limit + floor(limit (W - 2) / W)
//   = 2*limit - ceil(2*limit / W) units (p = limit, d = 1), and the bound is
//   reached: limit units at the last microsecond of a window after an empty
//   one, then as many as the estimate admits at elapsed W - 2.  With
//   W >= 1 s and limit >= 1, ceil(2*limit/W) >= 1, so the bound is < 2*limit.
//
// Bucket algorithms (token_bucket, gcra) — one machine, two capacity
// conventions.  With L = limit, W = window and capacity C, the emission
// interval is T = W / L microseconds.  Times are kept exactly in units of
// 1/L microsecond ("scaled"): TAT = window_start * L + used (used in
// [0, L)), T = W scaled units, now = now * L.  Then
//   a request of n is allowed  iff  max(TAT, now) + n*T - now <= C*T
//   available = floor((C*T - (max(TAT, now) - now)) / T), clamped to [0, C]
//   consume(n): TAT = max(TAT, now) + n*T
//   wait_for(n) = ceil((TAT - (C - n)*T) / L) - now    (n <= C)
// token_bucket: C = burst, or limit when burst is 0; refills limit per W.
// gcra: redis-cell's CL.THROTTLE with max_burst = burst and count/period =
//   limit/W: delay_variation_tolerance = T * (max_burst + 1), C = max_burst
//   + 1; allow_at = max(tat, now) + n*T - dvt, allowed iff now >= allow_at
//   (the same test as above); remaining = floor((dvt - (tat - now)) / T);
//   retry_after = allow_at - now rounded up to a whole microsecond;
//   reset_after = tat - now.
// To keep the TAT inside int64 microseconds, C is capped so that a full
// bucket drains within 2^62 us (146,000 years): C <= floor(2^62 * L / W).
// The cap only bites for buckets that refill slower than that (e.g. limit 1
// per 3650 days with burst above 14,600); capacity() reports it.
//
// Magnitudes: L, C <= ~1e15, W <= 3.2e14, |now| < 2^63, so scaled times stay
// below 2^63 * 1e15 < 2^113 and products below 2^127: __int128 is exact.

#include "rate_limiter/core/algorithm.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

namespace rate_limiter::core {
namespace {

using i128 = __int128;

constexpr int64_t kPpm = 1'000'000;
constexpr int64_t kMaxBucketSpanMicros = int64_t{1} << 62;

bool is_bucket(Algorithm a) noexcept { return a == Algorithm::TokenBucket || a == Algorithm::Gcra; }

Algorithm checked(Algorithm a) noexcept {
  switch (a) {
    case Algorithm::FixedWindow:
    case Algorithm::SlidingWindow:
    case Algorithm::TokenBucket:
    case Algorithm::Gcra:
      return a;
  }
  return Algorithm::FixedWindow;
}

// A rule clamped into the documented bounds, with its capacity.
struct Shape {
  Algorithm algorithm;
  int64_t limit;   // L, 1 .. kMaxQuantity
  int64_t window;  // W, 1 .. kMaxWindowMicros
  int64_t capacity;
  int64_t origin;  // of the aligned windows
};

Shape shape_of(const LimitRule& rule) noexcept {
  Shape s;
  s.algorithm = checked(rule.algorithm);
  s.limit = std::clamp<int64_t>(rule.limit, 1, kMaxQuantity);
  s.window = std::clamp<int64_t>(rule.window_micros, 1, kMaxWindowMicros);
  s.origin = rule.origin;
  const int64_t burst = std::clamp<int64_t>(rule.burst, 0, kMaxQuantity);
  switch (s.algorithm) {
    case Algorithm::TokenBucket:
      s.capacity = burst > 0 ? burst : s.limit;
      break;
    case Algorithm::Gcra:
      s.capacity = burst + 1;
      break;
    default:
      s.capacity = s.limit;
      break;
  }
  if (is_bucket(s.algorithm)) {
    const i128 most = static_cast<i128>(kMaxBucketSpanMicros) * s.limit / s.window;  // >= 14,600
    if (s.capacity > most) s.capacity = static_cast<int64_t>(most);
  }
  return s;
}

int64_t saturate(i128 v) noexcept {
  if (v > std::numeric_limits<int64_t>::max()) return std::numeric_limits<int64_t>::max();
  if (v < std::numeric_limits<int64_t>::min()) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

// Floor and ceiling of a / b for b > 0, any sign of a.
i128 floor_div(i128 a, i128 b) noexcept {
  i128 q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q;
}
i128 ceil_div(i128 a, i128 b) noexcept {
  i128 q = a / b;
  if (a % b != 0 && a > 0) ++q;
  return q;
}

bool built_for(const Shape& s, const CounterState& st) noexcept {
  return st.window_micros != 0 && st.window_micros == s.window && st.limit == s.limit &&
         st.algorithm == static_cast<uint8_t>(s.algorithm);
}

i128 scaled_tat(const Shape& s, const CounterState& st) noexcept;
void set_scaled_tat(const Shape& s, CounterState* st, i128 tat) noexcept;

// A state built for the same algorithm and window but another limit keeps
// what it counted: a window keeps its used/previous counts, a bucket keeps
// its debt in units (the scaled TAT - now, capped at the new capacity).
// So changing a limit never hands out fresh quota, as with fixed windows
// before algorithms existed.
CounterState relimited(const Shape& s, const CounterState& state, int64_t now) noexcept {
  if (state.window_micros == 0 || state.window_micros != s.window || state.limit == s.limit ||
      state.limit < 1 || state.algorithm != static_cast<uint8_t>(s.algorithm))
    return state;
  CounterState st = state;
  if (is_bucket(s.algorithm)) {
    Shape old = s;
    old.limit = state.limit;
    // The debt is kept whole, even beyond the new capacity: lowering a
    // limit and raising it again must not hand out the difference.
    const i128 debt =
        std::max<i128>(scaled_tat(old, state) - static_cast<i128>(now) * old.limit, 0);
    st.limit = s.limit;
    set_scaled_tat(s, &st, static_cast<i128>(now) * s.limit + debt);
  } else {
    st.limit = s.limit;
  }
  return st;
}

CounterState fresh_state(const Shape& s, int64_t now) noexcept {
  CounterState st;
  st.window_micros = s.window;
  st.limit = s.limit;
  st.algorithm = static_cast<uint8_t>(s.algorithm);
  // A fresh bucket is full: its TAT is now.
  st.window_start = is_bucket(s.algorithm) ? now : aligned_window_start(now, s.window, s.origin);
  return st;
}

// The advanced state for a shape (see advance()).
CounterState advanced(const Shape& s, const CounterState& original, int64_t now) noexcept {
  const CounterState state = relimited(s, original, now);
  if (!built_for(s, state)) {
    CounterState st = fresh_state(s, now);
    // A fixed window of another length whose window is still live (a
    // calendar period of the PostgreSQL layer replacing the fixed window
    // of a rule with months, or a new period_anchor) keeps what it counted
    // in the window that contains now: a change of alignment never hands
    // out fresh quota.  At a period's natural end the old window has ended.
    // (Only for rules on an origin of their own: any other counter is keyed
    // with its window, so a length change means another rule.)
    if (s.algorithm == Algorithm::FixedWindow && s.origin != kWindowOriginMicros &&
        state.window_micros != 0 &&
        state.algorithm == static_cast<uint8_t>(Algorithm::FixedWindow) && state.limit == s.limit &&
        state.window_start <= now &&
        static_cast<i128>(now) - state.window_start < state.window_micros)
      st.used = std::clamp<int64_t>(state.used, 0, s.limit);
    return st;
  }
  CounterState st = state;
  if (is_bucket(s.algorithm)) {
    // A TAT before now means a full bucket: normalize it to now, so the
    // state is live (not expired) at now.
    if (st.window_start < now) {
      st.window_start = now;
      st.used = 0;
    }
    st.used = std::clamp<int64_t>(st.used, 0, s.limit - 1);
    return st;
  }
  const int64_t start = aligned_window_start(now, s.window, s.origin);
  // Live window, or a window in the future (the clock stepped back): kept.
  if (static_cast<i128>(now) - st.window_start < s.window) {
    // A live fixed window on another grid (the origin moved: a calendar
    // period's new anchor or zone) moves onto the rule's grid with its
    // count: never fresh quota, and it ends when the rule's window ends.
    if (s.algorithm == Algorithm::FixedWindow && st.window_start < start) st.window_start = start;
    return st;
  }
  const i128 shift = std::max<i128>(1, (static_cast<i128>(start) - st.window_start) / s.window);
  const int64_t used = std::max<int64_t>(0, st.used);
  const int64_t u =
      static_cast<int64_t>(std::min<i128>(kPpm, static_cast<i128>(used) * kPpm / s.limit));
  int64_t h = (std::min<int64_t>(st.history_ppm, kPpm) + u) / 2;
  h = shift - 1 >= 32 ? 0 : h >> static_cast<int>(shift - 1);
  st.history_ppm = static_cast<uint32_t>(h);
  st.previous = s.algorithm == Algorithm::SlidingWindow && shift == 1 ? used : 0;
  st.used = 0;
  st.window_start = start;
  return st;
}

// Elapsed microseconds of an advanced window state, in [0, W).
int64_t elapsed(const Shape& s, const CounterState& st, int64_t now) noexcept {
  return static_cast<int64_t>(
      std::clamp<i128>(static_cast<i128>(now) - st.window_start, 0, s.window - 1));
}

// Units counted against a window algorithm at now (sliding: the estimate).
i128 window_count(const Shape& s, const CounterState& st, int64_t now) noexcept {
  i128 count = std::max<int64_t>(0, st.used);
  if (s.algorithm == Algorithm::SlidingWindow && st.previous > 0) {
    count += ceil_div(static_cast<i128>(st.previous) * (s.window - elapsed(s, st, now)), s.window);
  }
  return count;
}

i128 scaled_tat(const Shape& s, const CounterState& st) noexcept {
  return static_cast<i128>(st.window_start) * s.limit + st.used;
}

// Available units of an advanced state.
int64_t available_of(const Shape& s, const CounterState& st, int64_t now) noexcept {
  if (is_bucket(s.algorithm)) {
    const i128 now_s = static_cast<i128>(now) * s.limit;
    const i128 debt = std::max<i128>(0, scaled_tat(s, st) - now_s);
    const i128 room = static_cast<i128>(s.capacity) * s.window - debt;
    if (room <= 0) return 0;
    return static_cast<int64_t>(std::min<i128>(s.capacity, room / s.window));
  }
  const i128 left = static_cast<i128>(s.limit) - window_count(s, st, now);
  return left <= 0 ? 0 : static_cast<int64_t>(left);
}

void set_scaled_tat(const Shape& s, CounterState* st, i128 tat) noexcept {
  st->window_start = saturate(floor_div(tat, s.limit));
  st->used = static_cast<int64_t>(tat - floor_div(tat, s.limit) * s.limit);
}

}  // namespace

const char* algorithm_name(Algorithm a) noexcept {
  switch (a) {
    case Algorithm::FixedWindow:
      return "fixed_window";
    case Algorithm::SlidingWindow:
      return "sliding_window";
    case Algorithm::TokenBucket:
      return "token_bucket";
    case Algorithm::Gcra:
      return "gcra";
  }
  return "fixed_window";
}

bool parse_algorithm(const char* name, std::size_t len, Algorithm* out) noexcept {
  if (name == nullptr) return false;
  for (int i = 0; i < kAlgorithms; ++i) {
    const auto a = static_cast<Algorithm>(i);
    const char* candidate = algorithm_name(a);
    if (std::strlen(candidate) == len && std::memcmp(candidate, name, len) == 0) {
      *out = a;
      return true;
    }
  }
  return false;
}

int64_t capacity(const LimitRule& rule) noexcept { return shape_of(rule).capacity; }

CounterState advance(const LimitRule& rule, const CounterState& state, int64_t now) noexcept {
  return advanced(shape_of(rule), state, now);
}

int64_t available(const LimitRule& rule, const CounterState& state, int64_t now) noexcept {
  const Shape s = shape_of(rule);
  return available_of(s, advanced(s, state, now), now);
}

int64_t consume(const LimitRule& rule, CounterState* state, int64_t n, int64_t now) noexcept {
  const Shape s = shape_of(rule);
  CounterState st = advanced(s, *state, now);
  // n beyond 0 .. available() is clamped: a counter never goes past its
  // capacity, whatever the caller does.
  n = std::clamp<int64_t>(n, 0, available_of(s, st, now));
  int64_t window = 0;
  if (is_bucket(s.algorithm)) {
    const i128 base = std::max<i128>(scaled_tat(s, st), static_cast<i128>(now) * s.limit);
    const i128 end = base + static_cast<i128>(n) * s.window;
    set_scaled_tat(s, &st, end);
    // The charge's end: the instant (whole us, rounded up) by which the
    // bucket has refilled this charge and everything before it.
    window = saturate((end + s.limit - 1) / s.limit);
  } else {
    st.used = std::max<int64_t>(0, st.used) + n;  // n <= available <= limit - used
    window = st.window_start;
  }
  *state = st;
  return window;
}

void charge_unclamped(const LimitRule& rule, CounterState* state, int64_t n, int64_t now) noexcept {
  const Shape s = shape_of(rule);
  CounterState st = advanced(s, *state, now);
  n = std::max<int64_t>(n, 0);
  if (is_bucket(s.algorithm)) {
    const i128 base = std::max<i128>(scaled_tat(s, st), static_cast<i128>(now) * s.limit);
    set_scaled_tat(s, &st, base + static_cast<i128>(n) * s.window);
  } else {
    st.used = static_cast<int64_t>(std::min<i128>(
        static_cast<i128>(std::max<int64_t>(0, st.used)) + n, kMaxQuantity * static_cast<i128>(2)));
  }
  *state = st;
}

int64_t wait_for(const LimitRule& rule, const CounterState& state, int64_t n,
                 int64_t now) noexcept {
  const Shape s = shape_of(rule);
  const CounterState st = advanced(s, state, now);
  if (n <= 0) return 0;
  if (n > s.capacity) return -1;
  if (available_of(s, st, now) >= n) return 0;
  switch (s.algorithm) {
    case Algorithm::FixedWindow:
      return saturate(static_cast<i128>(st.window_start) + s.window - now);
    case Algorithm::SlidingWindow: {
      const i128 w = s.window;
      const i128 start = st.window_start;
      // In this window: the smallest elapsed e with
      // used + ceil(previous * (W - e) / W) <= limit - n, i.e.
      // W - e <= floor(R * W / previous) with R = limit - n - used.
      const i128 r = static_cast<i128>(s.limit) - n - st.used;
      if (r >= 0 && st.previous > 0) {
        const i128 keep = r * w / st.previous;
        if (keep > 0) {  // e = W - keep < W; e > elapsed() since n is not available now
          return saturate(start + (w - std::min(keep, w)) - now);
        }
      }
      // In the next window previous' = used and used' = 0: the smallest
      // elapsed e' with ceil(used * (W - e') / W) <= limit - n; e' = W is
      // the window after it (nothing counted), so this always ends.
      i128 e2 = 0;
      if (st.used > 0) e2 = std::max<i128>(0, w - (static_cast<i128>(s.limit) - n) * w / st.used);
      return saturate(start + w + e2 - now);
    }
    case Algorithm::TokenBucket:
    case Algorithm::Gcra: {
      const i128 target = scaled_tat(s, st) - static_cast<i128>(s.capacity - n) * s.window;
      return saturate(ceil_div(target, s.limit) - now);
    }
  }
  return -1;
}

int64_t reset_at(const LimitRule& rule, const CounterState& state, int64_t now) noexcept {
  const Shape s = shape_of(rule);
  const CounterState st = advanced(s, state, now);
  if (is_bucket(s.algorithm)) {
    const i128 tat = scaled_tat(s, st);
    return tat > static_cast<i128>(now) * s.limit ? saturate(ceil_div(tat, s.limit)) : now;
  }
  const i128 end = static_cast<i128>(st.window_start) + s.window;
  return saturate(s.algorithm == Algorithm::SlidingWindow && st.used > 0 ? end + s.window : end);
}

void refund(const LimitRule& rule, CounterState* state, int64_t n, int64_t charge_window,
            int64_t now) noexcept {
  const Shape s = shape_of(rule);
  // A state rebuilt for another rule since the charge no longer holds it.
  if (n <= 0 || !built_for(s, *state)) return;
  if (is_bucket(s.algorithm)) {
    // Only the part of the charge the bucket has not refilled yet can come
    // back: the charge occupied [end - n*W/L, end) of the TAT's timeline,
    // and refill has paid back everything before now.  (0: no end known,
    // nothing comes back.)
    if (charge_window <= 0) return;
    const i128 now_s = static_cast<i128>(now) * s.limit;
    const i128 end_s = static_cast<i128>(charge_window) * s.limit;
    const i128 tat = scaled_tat(s, *state);
    if (tat <= now_s || end_s <= now_s) return;
    const i128 unpaid = (end_s - now_s) / s.window;
    const i128 back = std::min<i128>(n, unpaid);
    set_scaled_tat(s, state, std::max(now_s, tat - back * s.window));
    return;
  }
  if (charge_window == state->window_start) {
    state->used -= std::min(n, std::max<int64_t>(0, state->used));
  } else if (s.algorithm == Algorithm::SlidingWindow &&
             static_cast<i128>(charge_window) + s.window == state->window_start) {
    state->previous -= std::min(n, std::max<int64_t>(0, state->previous));
  }
}

int64_t expiry_of(const CounterState& state) noexcept {
  if (state.window_micros == 0) return std::numeric_limits<int64_t>::min();
  switch (static_cast<Algorithm>(state.algorithm)) {
    case Algorithm::SlidingWindow:
      return saturate(static_cast<i128>(state.window_start) +
                      2 * static_cast<i128>(state.window_micros));
    case Algorithm::TokenBucket:
    case Algorithm::Gcra:
      return saturate(static_cast<i128>(state.window_start) + 1);
    case Algorithm::FixedWindow:
      break;
  }
  return saturate(static_cast<i128>(state.window_start) + state.window_micros);
}

bool state_expired(const CounterState& state, int64_t now) noexcept {
  return now >= expiry_of(state);
}

uint32_t usage_ppm(const LimitRule& rule, const CounterState& state, int64_t now) noexcept {
  const Shape s = shape_of(rule);
  const int64_t used = s.capacity - available_of(s, advanced(s, state, now), now);
  return static_cast<uint32_t>(static_cast<i128>(used) * kPpm / s.capacity);
}

uint32_t window_position_ppm(const LimitRule& rule, const CounterState& state,
                             int64_t now) noexcept {
  const Shape s = shape_of(rule);
  if (is_bucket(s.algorithm)) return 0;
  const CounterState st = advanced(s, state, now);
  return static_cast<uint32_t>(static_cast<i128>(elapsed(s, st, now)) * kPpm / s.window);
}

}  // namespace rate_limiter::core
