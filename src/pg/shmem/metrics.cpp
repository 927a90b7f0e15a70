#include "rate_limiter/pg/shmem/metrics.hpp"

#include <ctime>

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
  latency_record(&m.latency, elapsed > 0 ? static_cast<uint64>(elapsed) : 0);
}

void reset_metrics() noexcept {
  SharedMetrics& m = shared->metrics;
  // Not keys_in_use (the slots are still occupied) and not the queue depth,
  // lag or capacity (read from the queue itself): those are gauges.
  for_each_metric_counter(m, [](pg_atomic_uint64* c) { pg_atomic_write_u64(c, 0); });
  latency_init(&m.latency);
}

}  // namespace rate_limiter::pg
