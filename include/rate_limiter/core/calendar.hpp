// Calendar periods: windows of months, or of days in a time zone, whose
// length follows the calendar.
//
// A period of (months, days, micros) anchored at a local wall-clock time A
// (microseconds since 1970-01-01 00:00 as if the zone were UTC) has its
// k-th start, for every integer k, at
//
//   to_utc(A + k*months (months first, the day clamped to the month's
//          last day), + k*days (calendar days)) + k*micros
//
// which is PostgreSQL's timestamptz + interval arithmetic (months, then
// days, in local time; then the time part as elapsed microseconds) applied
// from the anchor, never period by period: a quota anchored on the 31st
// resets on the 31st of every month that has one and on the last day of
// the others; '1 day' in a zone with daylight saving time spans 23 or 25
// hours on the days of the changes.  Period k covers [start(k), start(k+1)).
//
// The zone is the caller's (ZoneOffsets): the PostgreSQL layer answers from
// pg_tz, the unit tests from fixed rules.  Everything is noexcept and
// allocates nothing.
#pragma once

#include <cstdint>

namespace rate_limiter::core {

class ZoneOffsets {
 public:
  // UTC microseconds of a local wall-clock time; a time the zone skips (a
  // spring-forward gap) or repeats is resolved as the zone's library does.
  virtual int64_t to_utc(int64_t local_micros) const noexcept = 0;
  // Local wall-clock microseconds of a UTC time.
  virtual int64_t to_local(int64_t utc_micros) const noexcept = 0;

 protected:
  ~ZoneOffsets() = default;
};

struct CalendarPeriod {
  int32_t months = 0;
  int32_t days = 0;
  int64_t micros = 0;        // the time part
  int64_t anchor_local = 0;  // wall-clock microseconds of start(0)
};

struct PeriodBounds {
  int64_t start = 0;  // UTC microseconds
  int64_t end = 0;    // exclusive; > start
};

// The default anchors: 1970-01-01 00:00 local for periods with months (a
// month starts on the 1st, a quarter in January, April, July, October),
// 1970-01-05 00:00 local (a Monday) for the others, as the UTC windows are
// aligned (window.hpp).
int64_t default_anchor_local(const CalendarPeriod& p) noexcept;

// The start of period k.
int64_t period_start(const CalendarPeriod& p, const ZoneOffsets& zone, int64_t k) noexcept;

// The period that contains `now` (UTC microseconds).  A period that the
// zone's rules make empty or negative (a sub-hour period across a clock
// change) is merged into the next one.
PeriodBounds period_containing(const CalendarPeriod& p, const ZoneOffsets& zone,
                               int64_t now) noexcept;

// Civil-date helpers, exposed for the tests: days since 1970-01-01 of a
// proleptic Gregorian date, and back.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) noexcept;
void civil_from_days(int64_t days, int64_t* y, unsigned* m, unsigned* d) noexcept;

}  // namespace rate_limiter::core
