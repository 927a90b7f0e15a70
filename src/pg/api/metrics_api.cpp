// get_performance_metrics() and reset_performance_metrics(): the metrics of
// shared memory (shmem/metrics.hpp) and the gauges of the rule table and the
// usage queue, as one jsonb.
#include "rate_limiter/pg/shmem.hpp"

#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"

namespace rate_limiter::pg {

namespace {

void append_metric(StringInfo buf, const char* name, uint64 value, bool first = false) {
  appendStringInfo(buf, "%s\"%s\": " UINT64_FORMAT, first ? "" : ", ", name, value);
}

void append_seconds(StringInfo buf, const char* name, double ns) {
  appendStringInfo(buf, ", \"%s\": %.9f", name, ns / 1e9);
}

}  // namespace

}  // namespace rate_limiter::pg

using namespace rate_limiter::pg;

// get_performance_metrics() -> jsonb
RL_SQL_FUNCTION(get_performance_metrics) {
  require_shared_state();
  SharedMetrics& m = shared->metrics;
  const uint64 total = pg_atomic_read_u64(&m.total_checks);
  StringInfoData buf;
  initStringInfo(&buf);
  appendStringInfoChar(&buf, '{');
  append_metric(&buf, "total_checks", total, true);
  append_metric(&buf, "allowed_requests", pg_atomic_read_u64(&m.allowed));
  append_metric(&buf, "denied_requests", pg_atomic_read_u64(&m.denied));
  // Seconds, as a moving average (latency_histogram.hpp):
  // the mean since startup would hide a recent slowdown.
  append_seconds(&buf, "average_check_time", latency_average_ns(&m.latency));
  append_seconds(&buf, "check_time_p50",
                 static_cast<double>(latency_percentile_ns(&m.latency, 0.50)));
  append_seconds(&buf, "check_time_p95",
                 static_cast<double>(latency_percentile_ns(&m.latency, 0.95)));
  append_seconds(&buf, "check_time_p99",
                 static_cast<double>(latency_percentile_ns(&m.latency, 0.99)));
  append_seconds(&buf, "check_time_total",
                 static_cast<double>(pg_atomic_read_u64(&m.check_time_ns)));
  append_metric(&buf, "emergency_overrides", pg_atomic_read_u64(&m.emergency_overrides));
  append_metric(&buf, "burst_allocations", pg_atomic_read_u64(&m.burst_allocations));
  append_metric(&buf, "emergency_override_refused", pg_atomic_read_u64(&m.emergency_refused));
  append_metric(&buf, "fail_open_decisions", pg_atomic_read_u64(&m.fail_open));
  append_metric(&buf, "fail_closed_decisions", pg_atomic_read_u64(&m.fail_closed));
  append_metric(&buf, "lock_timeouts", pg_atomic_read_u64(&m.lock_timeouts));
  append_metric(&buf, "lock_waits", pg_atomic_read_u64(&m.lock_waits));
  append_metric(&buf, "evictions", pg_atomic_read_u64(&m.evictions));
  append_metric(&buf, "keys_in_use", pg_atomic_read_u64(&m.keys_in_use));
  append_metric(&buf, "keys_capacity", shared->geometry.total_capacity());
  append_metric(&buf, "partitions", shared->geometry.partitions);
  // Percent of the counter table in use, rounded down (the table_filling
  // alert compares it with rate_limiter.alert_table_fill).
  append_metric(
      &buf, "keys_fill_pct",
      pg_atomic_read_u64(&m.keys_in_use) * 100 / Max(shared->geometry.total_capacity(), 1));
  append_metric(&buf, "key_budget_refusals", pg_atomic_read_u64(&m.key_refusals));
  const RuleTableStats rules = rule_table_stats();
  append_metric(&buf, "rules_in_use", rules.live);
  append_metric(&buf, "rules_capacity", rules.capacity);
  uint64 databases = 0, overflowed = 0;
  const InstallationSlot* slots = installation_slots();
  for (int i = 0; i < installation_slot_count(); ++i) {
    if (slots[i].installation == 0 || slots[i].dropping) continue;
    ++databases;
    if (pg_atomic_read_u32(const_cast<pg_atomic_uint32*>(&slots[i].rules_overflowed)) != 0)
      ++overflowed;
  }
  append_metric(&buf, "rules_overflowed_databases", overflowed);
  append_metric(&buf, "rule_sql_lookups", pg_atomic_read_u64(&m.rule_sql_lookups));
  append_metric(&buf, "databases", databases);
  const UsageQueueStats q = usage_queue_stats();
  append_metric(&buf, "usage_queue_depth", q.events);
  append_metric(&buf, "usage_queue_bytes", q.bytes);
  append_metric(&buf, "usage_queue_capacity", q.capacity);
  append_metric(&buf, "usage_flush_lag_ms", static_cast<uint64>(q.lag_ms));
  append_metric(&buf, "usage_rows_flushed", pg_atomic_read_u64(&m.usage_rows_flushed));
  append_metric(&buf, "usage_queue_full_waits", pg_atomic_read_u64(&m.usage_queue_full_waits));
  append_metric(&buf, "usage_sync_fallbacks", pg_atomic_read_u64(&m.usage_sync_fallbacks));
  append_metric(&buf, "usage_transaction_cap_fallbacks",
                pg_atomic_read_u64(&m.usage_cap_fallbacks));
  append_metric(&buf, "usage_dead_letters", pg_atomic_read_u64(&m.usage_dead_letters));
  append_metric(&buf, "shadow_denials", pg_atomic_read_u64(&m.shadow_denials));
  append_metric(&buf, "alerts_queued", pg_atomic_read_u64(&m.alerts_queued));
  append_metric(&buf, "alerts_dropped", pg_atomic_read_u64(&m.alerts_dropped));
  append_metric(&buf, "alerts_sent", pg_atomic_read_u64(&m.alerts_sent));
  appendStringInfoChar(&buf, '}');
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

// reset_performance_metrics(): zeroes the counters and the latency
// statistics (not the gauges).  EXECUTE is revoked from PUBLIC.
RL_SQL_FUNCTION(reset_performance_metrics) {
  require_shared_state();
  reset_metrics();
  PG_RETURN_VOID();
}
