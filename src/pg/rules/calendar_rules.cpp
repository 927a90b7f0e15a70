#include "rate_limiter/pg/rules/calendar_rules.hpp"

#include <algorithm>

#include "rate_limiter/core/calendar.hpp"
#include "rate_limiter/pg/rules/time_zones.hpp"

namespace rate_limiter::pg {
namespace {

// A pg_tz as the core's zone.  timestamp2tm and DetermineTimeZoneOffset
// never ereport: safe under any lock.
class PgZone final : public core::ZoneOffsets {
 public:
  explicit PgZone(const pg_tz* tz) : tz_(const_cast<pg_tz*>(tz)) {}

  int64_t to_utc(int64_t local) const noexcept override {
    if (tz_ == nullptr) return local;
    struct pg_tm tm;
    fsec_t fsec = 0;
    if (timestamp2tm(local - kPostgresEpochUnixMicros, nullptr, &tm, &fsec, nullptr, nullptr) != 0)
      return local;
    const int west = DetermineTimeZoneOffset(&tm, tz_);  // seconds west of Greenwich
    return local + static_cast<int64>(west) * USECS_PER_SEC;
  }

  int64_t to_local(int64_t utc) const noexcept override {
    if (tz_ == nullptr) return utc;
    struct pg_tm tm;
    fsec_t fsec = 0;
    int west = 0;
    if (timestamp2tm(utc - kPostgresEpochUnixMicros, &west, &tm, &fsec, nullptr, tz_) != 0)
      return utc;
    return utc - static_cast<int64>(west) * USECS_PER_SEC;
  }

 private:
  pg_tz* tz_;
};

core::CalendarPeriod period_of(const core::RuleRecord& r, const PgZone& zone) noexcept {
  core::CalendarPeriod p;
  p.months = r.period_months;
  p.days = r.period_days;
  p.micros = r.window_micros -
             static_cast<int64>(r.period_months) * DAYS_PER_MONTH * USECS_PER_DAY -
             static_cast<int64>(r.period_days) * USECS_PER_DAY;
  p.anchor_local =
      r.period_anchor == INT64_MIN ? core::default_anchor_local(p) : zone.to_local(r.period_anchor);
  return p;
}

// The last periods computed in this backend, by rule shape.
struct CachedPeriod {
  int32 months, days;
  int64 window, anchor;
  uint16 zone;
  bool valid;
  core::PeriodBounds bounds;
};
constexpr int kCachedPeriods = 32;
CachedPeriod cache[kCachedPeriods];
int next_victim = 0;

}  // namespace

bool is_calendar(const core::RuleRecord& r) noexcept {
  return r.kind < core::kLimitKinds &&
         static_cast<core::Algorithm>(r.algorithm) == core::Algorithm::FixedWindow &&
         (r.period_months != 0 || r.period_zone != 0 || r.period_anchor != INT64_MIN);
}

core::LimitRule calendar_rule(const core::RuleRecord& r, const core::LimitRule& base,
                              int64 at) noexcept {
  core::LimitRule rule = base;
  CachedPeriod* hit = nullptr;
  for (CachedPeriod& c : cache)
    if (c.valid && c.months == r.period_months && c.days == r.period_days &&
        c.window == r.window_micros && c.anchor == r.period_anchor && c.zone == r.period_zone &&
        c.bounds.start <= at && at < c.bounds.end) {
      hit = &c;
      break;
    }
  CachedPeriod computed;
  if (hit == nullptr) {
    const pg_tz* tz = time_zone_of(r.period_zone);
    const PgZone zone(tz);
    computed = CachedPeriod{r.period_months,
                            r.period_days,
                            r.window_micros,
                            r.period_anchor,
                            r.period_zone,
                            true,
                            core::period_containing(period_of(r, zone), zone, at)};
    hit = &computed;
    // A zone this backend could not prepare is computed as UTC for this
    // call only: never cached as the zone's.
    if (r.period_zone == 0 || tz != nullptr) {
      cache[next_victim] = computed;
      next_victim = (next_victim + 1) % kCachedPeriods;
    }
  }
  rule.origin = hit->bounds.start;
  rule.window_micros = std::clamp<int64>(hit->bounds.end - hit->bounds.start,
                                         core::kMinWindowMicros, core::kMaxWindowMicros);
  return rule;
}

int64 longest_period(const core::RuleRecord& r) noexcept {
  const int64 time = r.window_micros -
                     static_cast<int64>(r.period_months) * DAYS_PER_MONTH * USECS_PER_DAY -
                     static_cast<int64>(r.period_days) * USECS_PER_DAY;
  return static_cast<int64>(r.period_months) * 31 * USECS_PER_DAY +
         static_cast<int64>(r.period_days) * 25 * USECS_PER_HOUR + time + USECS_PER_HOUR;
}

}  // namespace rate_limiter::pg
