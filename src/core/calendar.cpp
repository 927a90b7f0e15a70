#include "rate_limiter/core/calendar.hpp"

#include <algorithm>

#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {
namespace {

constexpr int64_t kMicrosPerMeanMonth = 2'629'746 * kMicrosPerSecond;  // 365.2425 / 12 days

int64_t floor_div(int64_t a, int64_t b) noexcept {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

bool leap(int64_t y) noexcept { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(int64_t y, unsigned m) noexcept {
  static constexpr unsigned kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && leap(y) ? 29 : kDays[m - 1];
}

}  // namespace

// Howard Hinnant's algorithms (public domain, "chrono-Compatible Low-Level
// Date Algorithms").
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void civil_from_days(int64_t days, int64_t* y, unsigned* m, unsigned* d) noexcept {
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2 ? 1 : 0);
}

int64_t default_anchor_local(const CalendarPeriod& p) noexcept {
  return p.months != 0 ? 0 : 4 * kMicrosPerDay;
}

int64_t period_start(const CalendarPeriod& p, const ZoneOffsets& zone, int64_t k) noexcept {
  const int64_t day = floor_div(p.anchor_local, kMicrosPerDay);
  const int64_t time_of_day = p.anchor_local - day * kMicrosPerDay;
  int64_t y = 0;
  unsigned m = 0, d = 0;
  civil_from_days(day, &y, &m, &d);
  const int64_t month_index = y * 12 + (m - 1) + k * p.months;
  const int64_t y2 = floor_div(month_index, 12);
  const auto m2 = static_cast<unsigned>(month_index - y2 * 12 + 1);
  const unsigned d2 = std::min(d, days_in_month(y2, m2));
  const int64_t local = (days_from_civil(y2, m2, d2) + k * p.days) * kMicrosPerDay + time_of_day;
  return zone.to_utc(local) + k * p.micros;
}

PeriodBounds period_containing(const CalendarPeriod& p, const ZoneOffsets& zone,
                               int64_t now) noexcept {
  const int64_t mean = std::max<int64_t>(
      static_cast<int64_t>(p.months) * kMicrosPerMeanMonth + p.days * kMicrosPerDay + p.micros,
      kMicrosPerSecond);
  const int64_t origin = period_start(p, zone, 0);
  int64_t k = floor_div(now - origin, mean);
  PeriodBounds b;
  // The estimate is off by a few periods at most (the mean month drifts by
  // days over centuries, clock changes by an hour): walk to the period.
  for (int step = 0; step < 256; ++step) {
    b.start = period_start(p, zone, k);
    if (b.start > now) {
      --k;
      continue;
    }
    b.end = period_start(p, zone, k + 1);
    if (b.end <= now) {
      ++k;
      continue;
    }
    return b;
  }
  // Not reached for the periods the limits allow (at least 1 second, at
  // most 3650 days, zones whose offsets change by hours); bounded anyway.
  b.end = std::max(b.end, b.start + kMicrosPerSecond);
  return b;
}

}  // namespace rate_limiter::core
