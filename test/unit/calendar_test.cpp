#include <gtest/gtest.h>

#include "rate_limiter/core/calendar.hpp"
#include "rate_limiter/core/types.hpp"

using namespace rate_limiter::core;

namespace {

constexpr int64_t kHour = 3600 * kMicrosPerSecond;

int64_t at(int64_t y, unsigned m, unsigned d, int64_t hours = 0) {
  return days_from_civil(y, m, d) * kMicrosPerDay + hours * kHour;
}

struct Utc final : ZoneOffsets {
  int64_t to_utc(int64_t local) const noexcept override { return local; }
  int64_t to_local(int64_t utc) const noexcept override { return utc; }
};

// Central European Time with the EU rules: +1, +2 from the last Sunday of
// March 01:00 UTC to the last Sunday of October 01:00 UTC.
struct Berlin final : ZoneOffsets {
  static int64_t last_sunday(int64_t y, unsigned m) {
    int64_t day = days_from_civil(y, m, m == 3 || m == 10 ? 31 : 30);
    const int64_t weekday = ((day % 7) + 7 + 4) % 7;  // 1970-01-01 was a Thursday (4)
    return day - weekday;
  }
  static bool summer_utc(int64_t utc) {
    int64_t y = 0;
    unsigned m = 0, d = 0;
    civil_from_days(utc / kMicrosPerDay, &y, &m, &d);
    const int64_t begin = last_sunday(y, 3) * kMicrosPerDay + kHour;
    const int64_t end = last_sunday(y, 10) * kMicrosPerDay + kHour;
    return utc >= begin && utc < end;
  }
  int64_t to_local(int64_t utc) const noexcept override {
    return utc + (summer_utc(utc) ? 2 : 1) * kHour;
  }
  int64_t to_utc(int64_t local) const noexcept override {
    // Standard time first; a local time in the spring gap resolves forward.
    const int64_t winter = local - kHour;
    return summer_utc(local - 2 * kHour) ? local - 2 * kHour : winter;
  }
};

}  // namespace

TEST(Calendar, CivilDaysRoundTrip) {
  EXPECT_EQ(days_from_civil(1970, 1, 1), 0);
  EXPECT_EQ(days_from_civil(2000, 3, 1), 11017);
  for (int64_t day = -800000; day < 800000; day += 97) {
    int64_t y = 0;
    unsigned m = 0, d = 0;
    civil_from_days(day, &y, &m, &d);
    ASSERT_EQ(days_from_civil(y, m, d), day);
  }
}

TEST(Calendar, MonthsStartOnTheFirstByDefault) {
  CalendarPeriod p;
  p.months = 1;
  p.anchor_local = default_anchor_local(p);
  const PeriodBounds b = period_containing(p, Utc{}, at(2027, 2, 14, 5));
  EXPECT_EQ(b.start, at(2027, 2, 1));
  EXPECT_EQ(b.end, at(2027, 3, 1));  // February: 28 days
  const PeriodBounds leap = period_containing(p, Utc{}, at(2028, 2, 29, 23));
  EXPECT_EQ(leap.end - leap.start, 29 * kMicrosPerDay);
  p.months = 3;
  const PeriodBounds q = period_containing(p, Utc{}, at(2027, 5, 20));
  EXPECT_EQ(q.start, at(2027, 4, 1));
  EXPECT_EQ(q.end, at(2027, 7, 1));
  p.months = 12;
  const PeriodBounds y = period_containing(p, Utc{}, at(2028, 12, 31, 23));
  EXPECT_EQ(y.start, at(2028, 1, 1));
  EXPECT_EQ(y.end, at(2029, 1, 1));
}

TEST(Calendar, TheThirtyFirstClampsToTheLastDayAndComesBack) {
  CalendarPeriod p;
  p.months = 1;
  p.anchor_local = at(2027, 1, 31, 9);
  Utc utc;
  EXPECT_EQ(period_start(p, utc, 1), at(2027, 2, 28, 9));
  EXPECT_EQ(period_start(p, utc, 2), at(2027, 3, 31, 9));
  EXPECT_EQ(period_start(p, utc, 3), at(2027, 4, 30, 9));
  EXPECT_EQ(period_start(p, utc, 13), at(2028, 2, 29, 9));  // leap year
  EXPECT_EQ(period_start(p, utc, -1), at(2026, 12, 31, 9));
  const PeriodBounds b = period_containing(p, utc, at(2027, 3, 1));
  EXPECT_EQ(b.start, at(2027, 2, 28, 9));
  EXPECT_EQ(b.end, at(2027, 3, 31, 9));
}

TEST(Calendar, DaysInAZoneFollowDaylightSavingTime) {
  CalendarPeriod p;
  p.days = 1;
  p.anchor_local = default_anchor_local(p);
  Berlin berlin;
  // 2027-03-28: clocks go from 02:00 to 03:00 local; the day has 23 hours.
  const PeriodBounds spring = period_containing(p, berlin, at(2027, 3, 28, 12));
  EXPECT_EQ(spring.start, at(2027, 3, 27, 23));  // local midnight, UTC+1
  EXPECT_EQ(spring.end, at(2027, 3, 28, 22));    // next local midnight, UTC+2
  EXPECT_EQ(spring.end - spring.start, 23 * kHour);
  // 2027-10-31: 03:00 back to 02:00; 25 hours.
  const PeriodBounds autumn = period_containing(p, berlin, at(2027, 10, 31, 12));
  EXPECT_EQ(autumn.start, at(2027, 10, 30, 22));
  EXPECT_EQ(autumn.end, at(2027, 10, 31, 23));
  EXPECT_EQ(autumn.end - autumn.start, 25 * kHour);
  // An ordinary day: 24 hours, midnight to midnight local.
  const PeriodBounds plain = period_containing(p, berlin, at(2027, 6, 10, 12));
  EXPECT_EQ(plain.start, at(2027, 6, 9, 22));
  EXPECT_EQ(plain.end - plain.start, 24 * kHour);
  // Bounds are half-open: the end belongs to the next period.
  EXPECT_EQ(period_containing(p, berlin, plain.end).start, plain.end);
  EXPECT_EQ(period_containing(p, berlin, plain.end - 1).start, plain.start);
}

TEST(Calendar, ATimePartIsElapsedTime) {
  // '1 day 12 hours' from local midnight: the day in local time, then 12
  // elapsed hours.
  CalendarPeriod p;
  p.days = 1;
  p.micros = 12 * kHour;
  p.anchor_local = at(2027, 3, 27);
  Berlin berlin;
  EXPECT_EQ(period_start(p, berlin, 0), at(2027, 3, 26, 23));
  // Local midnight of the 28th is still winter time (the change is at 02:00).
  EXPECT_EQ(period_start(p, berlin, 1), at(2027, 3, 27, 23) + 12 * kHour);
  EXPECT_EQ(period_start(p, berlin, 2), at(2027, 3, 28, 22) + 24 * kHour);
}

TEST(Calendar, EveryInstantIsInExactlyOnePeriodFarFromTheAnchor) {
  CalendarPeriod p;
  p.months = 1;
  p.anchor_local = at(2000, 1, 31, 17);
  Berlin berlin;
  for (int64_t t = at(1990, 1, 1); t < at(2110, 1, 1); t += 7 * kMicrosPerDay + 13 * kHour) {
    const PeriodBounds b = period_containing(p, berlin, t);
    ASSERT_LE(b.start, t);
    ASSERT_LT(t, b.end);
    ASSERT_GE(b.end - b.start, 28 * kMicrosPerDay - kHour);
    ASSERT_LE(b.end - b.start, 31 * kMicrosPerDay + kHour);
  }
}

// The counting core with a moved origin (algorithm.hpp, LimitRule::origin).
#include "rate_limiter/core/algorithm.hpp"

TEST(CalendarCounting, AMovedOriginKeepsTheLiveCount) {
  LimitRule day;
  day.limit = 100;
  day.window_micros = kMicrosPerDay;
  day.algorithm = Algorithm::FixedWindow;
  const int64_t t0 = at(2027, 5, 10, 12);
  CounterState st = advance(day, CounterState{}, t0);
  consume(day, &st, 60, t0);
  // The anchor moves to 09:00: the live window realigns, keeping its 60.
  LimitRule nine = day;
  nine.origin = at(2027, 5, 10, 9);
  const CounterState moved = advance(nine, st, t0 + kHour);
  EXPECT_EQ(moved.window_start, at(2027, 5, 10, 9));
  EXPECT_EQ(available(nine, moved, t0 + kHour), 40);
  // It ends with the new grid's window.
  EXPECT_EQ(available(nine, moved, at(2027, 5, 11, 9)), 100);
}

TEST(CalendarCounting, ALengthChangeWhileLiveKeepsTheCount) {
  // The 30-day window of a '1 month' fixed window before calendar periods,
  // live when the calendar month (31 days) takes over.
  LimitRule thirty;
  thirty.limit = 1000;
  thirty.window_micros = 30 * kMicrosPerDay;
  const int64_t t0 = at(2027, 5, 10);
  CounterState st = advance(thirty, CounterState{}, t0);
  consume(thirty, &st, 700, t0);
  ASSERT_GT(st.window_start + st.window_micros, at(2027, 5, 12));
  LimitRule may = thirty;
  may.window_micros = 31 * kMicrosPerDay;
  may.origin = at(2027, 5, 1);
  const CounterState cal = advance(may, st, at(2027, 5, 12));
  EXPECT_EQ(cal.window_start, at(2027, 5, 1));
  EXPECT_EQ(available(may, cal, at(2027, 5, 12)), 300);
  // At a period's natural end the old one has ended: June starts whole.
  LimitRule june = thirty;
  june.origin = at(2027, 6, 1);
  EXPECT_EQ(available(june, advance(june, cal, at(2027, 6, 1)), at(2027, 6, 1)), 1000);
}
