#include <gtest/gtest.h>

#include "rate_limiter/core/window.hpp"

using namespace rate_limiter::core;

namespace {
constexpr int64_t kMinute = 60 * kMicrosPerSecond;
constexpr int64_t kHour = 60 * kMinute;
// 2026-11-27 13:45:30.25 UTC (a Friday), microseconds since the Unix epoch.
constexpr int64_t kNow = 1'795'787'130'250'000;
}  // namespace

TEST(Window, AlignsToCalendarUnits) {
  EXPECT_EQ(aligned_window_start(kNow, kMinute), 1'795'787'100'000'000);    // 13:45:00
  EXPECT_EQ(aligned_window_start(kNow, kHour), 1'795'784'400'000'000);      // 13:00:00
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

TEST(Window, CurrentWindowKeepsLiveCountAndRestartsExpired) {
  CounterState s{aligned_window_start(kNow, kMinute), kMinute, 42};
  EXPECT_EQ(current_window(s, kMinute, kNow).used, 42);
  CounterState later = current_window(s, kMinute, s.window_start + kMinute);
  EXPECT_EQ(later.used, 0);
  EXPECT_EQ(later.window_start, s.window_start + kMinute);
  EXPECT_FALSE(counter_expired(s, kNow));
  EXPECT_TRUE(counter_expired(s, s.window_start + kMinute));
}

TEST(Window, ChangedWindowLengthRestarts) {
  CounterState s{aligned_window_start(kNow, kMinute), kMinute, 42};
  CounterState changed = current_window(s, kHour, kNow);
  EXPECT_EQ(changed.used, 0);
  EXPECT_EQ(changed.window_micros, kHour);
  EXPECT_EQ(changed.window_start, aligned_window_start(kNow, kHour));
}

TEST(Window, ClockSteppingBackKeepsTheCount) {
  CounterState s{aligned_window_start(kNow, kMinute), kMinute, 42};
  EXPECT_EQ(current_window(s, kMinute, kNow - kHour).used, 42);
}

TEST(Window, FreshCounterIsExpired) {
  EXPECT_TRUE(counter_expired(CounterState{}, kNow));
  EXPECT_EQ(current_window(CounterState{}, kMinute, kNow).used, 0);
}
