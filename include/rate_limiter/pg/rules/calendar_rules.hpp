// Calendar periods of fixed-window limits.
//
// A fixed_window limit whose window has months ('1 month', '3 months',
// '1 year'), or that names a period_timezone or a period_anchor, counts in
// calendar periods (core/calendar.hpp): period k starts at
// anchor + k * window in the zone's local time, as timestamptz + interval
// computes it (months first, the day clamped to the month's last day; then
// days; then the time part as elapsed time).  The default anchor is
// 1970-01-01 00:00 local time for windows with months (a monthly quota
// resets on the 1st) and 1970-01-05 00:00 local time (a Monday) for the
// others, as the UTC windows are aligned.  Other fixed windows, and every
// window of the other algorithms, keep their fixed length ('1 month' is
// 30 days there) and the UTC alignment.
//
// The counting core knows a period as the fixed window of its own length
// whose origin is its start (core::LimitRule::origin): calendar_rule() is
// that window for the period containing `at`.  Counters are keyed with the
// rule's nominal window (RuleRecord::window_micros), never a period's
// length, so a limit keeps one counter from period to period; a period of
// another length than the one before starts the counter afresh (as every
// new period does; the moving usage average of dynamic allocation starts
// again too).
//
// Periods are cached per backend: computing one takes a few zone lookups,
// and a call reuses the period of the previous call until it ends.
#pragma once

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

bool is_calendar(const core::RuleRecord& r) noexcept;

// The fixed window of the period of `r` that contains `at` (base: the rule
// with its nominal window).  The rule's zone must be prepared
// (prepare_time_zone(); the rule lookups do it); an unprepared zone counts
// as UTC.
core::LimitRule calendar_rule(const core::RuleRecord& r, const core::LimitRule& base,
                              int64 at) noexcept;

// The longest a period of `r` can be: months of 31 days, days of 25 hours.
int64 longest_period(const core::RuleRecord& r) noexcept;

}  // namespace rate_limiter::pg
