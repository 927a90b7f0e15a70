// Raising alerts (docs/monitoring.md, "Alerts") and turning them into rows.
//
// Only calls in a served database (usage_log.hpp: database_served()) raise
// alerts: elsewhere no worker would write them.  Each database's worker
// writes its own database's alerts (alert_flush.cpp) and drops records of a
// former installation of the extension.
//
// Backends raise alerts after a decision, with no partition lock held: they
// fill an AlertRecord and push it into the alert queue (alert_queue.hpp),
// which never blocks and drops the record when full.  Nothing here runs
// SQL on the hot path.  The database's worker writes the records into
// rate_limit_alerts and sends the NOTIFY in that database (alert_flush.cpp),
// building the JSON payload with alert_payload().
//
// Dedup: rate_limit_alerts is UNIQUE NULLS NOT DISTINCT on (kind, user_id,
// api_endpoint, scope, window_start), so each alert is stored and notified
// at most once per key and window:
//  - quota_<limit_kind>_<pct>: the aligned window of the limit's length
//    containing the call (for bucket algorithms too);
//  - emergency_override: likewise, for the binding limit;
//  - abuse: the fixed abuse window (rate_limiter.abuse_window) the denial
//    counter is in;
//  - table_full, table_filling, fail_open, flush_lag, usage_dead_letter:
//    server-wide (user_id NULL), the aligned rate_limiter.alert_interval
//    window.
#pragma once

#include <string_view>

#include "rate_limiter/pg/alerts/alert_queue.hpp"
#include "rate_limiter/pg/engine.hpp"

namespace rate_limiter::pg {

// After decide_call() (status Decided or TableFull), before any error is
// raised for it: quota thresholds, emergency override, abuse (counts a
// denial), table full, table filling and fail open.
void raise_call_alerts(const CallInput& input, const CallResult& result, int64 now);

// A server-wide degradation alert of this database's installation.
void raise_degradation_alert(AlertKind kind, int64 now);

// A database's worker: its usage flush is behind by lag_ms (its stream and
// installation given explicitly).
void raise_flush_lag_alert(int stream, Oid database, Oid extension, int64 lag_ms,
                           int64 threshold_ms, int64 now);
// A database's worker set `rows` usage rows aside (token_usage_dead_letters).
void raise_dead_letter_alert(int stream, Oid database, Oid extension, uint64 rows, int64 now);

// The row's kind ("quota_tokens_80", "abuse", ...), scope and JSON payload;
// palloc'd.  scope is nullptr for alerts without one.
const char* alert_kind_text(const AlertRecord& record);
const char* alert_scope_text(const AlertRecord& record);
char* alert_payload(const AlertRecord& record);

}  // namespace rate_limiter::pg
