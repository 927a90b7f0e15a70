#include "rate_limiter/core/window.hpp"

#include <gtest/gtest.h>

#include "rate_limiter/core/algorithm.hpp"

using namespace rate_limiter::core;

namespace {
constexpr int64_t kMinute = 60 * kMicrosPerSecond;
constexpr int64_t kHour = 60 * kMinute;
// 2026-11-27 13:45:30.25 UTC (a Friday), microseconds since the Unix epoch.
constexpr int64_t kNow = 1'795'787'130'250'000;
}  // namespace

TEST(Window, AlignsToCalendarUnits) {
  EXPECT_EQ(aligned_window_start(kNow, kMinute), 1'795'787'100'000'000);        // 13:45:00
  EXPECT_EQ(aligned_window_start(kNow, kHour), 1'795'784'400'000'000);          // 13:00:00
  EXPECT_EQ(aligned_window_start(kNow, kMicrosPerDay), 1'795'737'600'000'000);  // midnight UTC
  // 1 week: Monday 2026-11-23 00:00 UTC.
  EXPECT_EQ(aligned_window_start(kNow, 7 * kMicrosPerDay), 1'795'392'000'000'000);
}

TEST(Window, StartIsNeverAfterNowAndWindowCoversNow) {
  for (int64_t w : {kMicrosPerSecond, 7 * kMicrosPerSecond, kHour + 1, 3650 * kMicrosPerDay}) {
    for (int64_t t : {kNow, kNow + 1, int64_t{0}, kWindowOriginMicros - 1, kWindowOriginMicros}) {
      const int64_t s = aligned_window_start(t, w);
      EXPECT_LE(s, t);
      EXPECT_GT(s + w, t);
      EXPECT_EQ((s - kWindowOriginMicros) % w, 0);
    }
  }
}

// The fixed-window behaviour of advance() and state_expired(), which
// replaced current_window() and counter_expired().
namespace {
LimitRule per_minute(int64_t limit = 100) { return LimitRule{limit, kMinute}; }
CounterState live(int64_t used) {
  CounterState s = advance(per_minute(), CounterState{}, kNow);
  s.used = used;
  return s;
}
}  // namespace

TEST(Window, AdvanceKeepsLiveCountAndRestartsExpired) {
  CounterState s = live(42);
  EXPECT_EQ(s.window_start, aligned_window_start(kNow, kMinute));
  EXPECT_EQ(advance(per_minute(), s, kNow).used, 42);
  CounterState later = advance(per_minute(), s, s.window_start + kMinute);
  EXPECT_EQ(later.used, 0);
  EXPECT_EQ(later.window_start, s.window_start + kMinute);
  EXPECT_FALSE(state_expired(s, kNow));
  EXPECT_TRUE(state_expired(s, s.window_start + kMinute));
  EXPECT_EQ(expiry_of(s), s.window_start + kMinute);
}

TEST(Window, ChangedWindowLengthRestarts) {
  CounterState changed = advance(LimitRule{100, kHour}, live(42), kNow);
  EXPECT_EQ(changed.used, 0);
  EXPECT_EQ(changed.window_micros, kHour);
  EXPECT_EQ(changed.window_start, aligned_window_start(kNow, kHour));
}

TEST(Window, ClockSteppingBackKeepsTheCount) {
  EXPECT_EQ(advance(per_minute(), live(42), kNow - kHour).used, 42);
}

TEST(Window, FreshCounterIsExpired) {
  EXPECT_TRUE(state_expired(CounterState{}, kNow));
  EXPECT_EQ(advance(per_minute(), CounterState{}, kNow).used, 0);
}
