#include "rate_limiter/pg/metrics.hpp"

#include <time.h>

#include "rate_limiter/pg/boundary.hpp"
#include "rate_limiter/pg/usage_queue.hpp"

namespace rate_limiter::pg {

int64_t monotonic_ns() noexcept {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void record_decision(bool allowed, int64_t started_ns) noexcept {
  SharedMetrics& m = shared->metrics;
  metric_add(&m.total_checks);
  metric_add(allowed ? &m.allowed : &m.denied);
  const int64_t elapsed = monotonic_ns() - started_ns;
  if (elapsed > 0) metric_add(&m.check_time_ns, static_cast<uint64>(elapsed));
}

namespace {

void append_metric(StringInfo buf, const char* name, uint64 value, bool first = false) {
  appendStringInfo(buf, "%s\"%s\": " UINT64_FORMAT, first ? "" : ", ", name, value);
}

}  // namespace

}  // namespace rate_limiter::pg

using namespace rate_limiter::pg;

// get_performance_metrics() -> jsonb
RL_SQL_FUNCTION(get_performance_metrics) {
  require_shared_state();
  SharedMetrics& m = shared->metrics;
  const uint64 total = pg_atomic_read_u64(&m.total_checks);
  const uint64 time_ns = pg_atomic_read_u64(&m.check_time_ns);
  StringInfoData buf;
  initStringInfo(&buf);
  appendStringInfoChar(&buf, '{');
  append_metric(&buf, "total_checks", total, true);
  append_metric(&buf, "allowed_requests", pg_atomic_read_u64(&m.allowed));
  append_metric(&buf, "denied_requests", pg_atomic_read_u64(&m.denied));
  // Seconds, as in the seed: the mean wall time of one decision since start.
  appendStringInfo(&buf, ", \"average_check_time\": %.9f",
                   total == 0 ? 0.0 : static_cast<double>(time_ns) / total / 1e9);
  append_metric(&buf, "emergency_overrides", pg_atomic_read_u64(&m.emergency_overrides));
  append_metric(&buf, "burst_allocations", pg_atomic_read_u64(&m.burst_allocations));
  append_metric(&buf, "emergency_override_refused", pg_atomic_read_u64(&m.emergency_refused));
  append_metric(&buf, "fail_open_decisions", pg_atomic_read_u64(&m.fail_open));
  append_metric(&buf, "fail_closed_decisions", pg_atomic_read_u64(&m.fail_closed));
  append_metric(&buf, "lock_timeouts", pg_atomic_read_u64(&m.lock_timeouts));
  append_metric(&buf, "evictions", pg_atomic_read_u64(&m.evictions));
  append_metric(&buf, "keys_in_use", pg_atomic_read_u64(&m.keys_in_use));
  append_metric(&buf, "keys_capacity", shared->geometry.total_capacity());
  append_metric(&buf, "partitions", shared->geometry.partitions);
  const UsageQueueStats q = usage_queue_stats();
  append_metric(&buf, "usage_queue_depth", q.events);
  append_metric(&buf, "usage_queue_bytes", q.bytes);
  append_metric(&buf, "usage_queue_capacity", q.capacity);
  append_metric(&buf, "usage_flush_lag_ms", static_cast<uint64>(q.lag_ms));
  append_metric(&buf, "usage_rows_flushed", pg_atomic_read_u64(&m.usage_rows_flushed));
  append_metric(&buf, "usage_queue_full_waits", pg_atomic_read_u64(&m.usage_queue_full_waits));
  append_metric(&buf, "usage_sync_fallbacks", pg_atomic_read_u64(&m.usage_sync_fallbacks));
  append_metric(&buf, "shadow_denials", pg_atomic_read_u64(&m.shadow_denials));
  append_metric(&buf, "alerts_queued", pg_atomic_read_u64(&m.alerts_queued));
  append_metric(&buf, "alerts_dropped", pg_atomic_read_u64(&m.alerts_dropped));
  append_metric(&buf, "alerts_sent", pg_atomic_read_u64(&m.alerts_sent));
  appendStringInfoChar(&buf, '}');
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
