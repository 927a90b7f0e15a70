// The counter table's segment: SharedState (hash key, metrics) followed by
// the counter partitions, and the process-local handles on it.  The map of
// every segment, tranche and lock order is src/pg/shared_memory.cpp.
#pragma once

#include <string_view>

#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/shmem/latency_histogram.hpp"
#include "rate_limiter/pg/shmem/segment.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// Counters read without a lock.  Each is monotonic except keys_in_use,
// until reset_performance_metrics() zeroes every one of them but keys_in_use
// (metrics.cpp: reset_metrics()).
struct SharedMetrics {
  pg_atomic_uint64 total_checks;  // decisions made by allocate/check/enforce
  pg_atomic_uint64 allowed;
  pg_atomic_uint64 denied;
  pg_atomic_uint64 check_time_ns;  // summed wall time of those calls
  pg_atomic_uint64 emergency_overrides;
  pg_atomic_uint64 burst_allocations;
  pg_atomic_uint64 fail_open;    // calls allowed by failure_mode = open
  pg_atomic_uint64 fail_closed;  // calls refused by failure_mode = closed
  pg_atomic_uint64 lock_timeouts;
  pg_atomic_uint64 lock_waits;  // partition lock acquisitions that found the lock taken
  pg_atomic_uint64 evictions;
  pg_atomic_uint64 keys_in_use;        // occupied counter slots
  pg_atomic_uint64 emergency_refused;  // emergency_override asked without the privilege
  // The usage log (usage_queue.hpp).
  pg_atomic_uint64 usage_rows_flushed;      // rows the flusher inserted
  pg_atomic_uint64 usage_queue_full_waits;  // events that found the queue full
  pg_atomic_uint64 usage_sync_fallbacks;    // ... and were then written synchronously
  pg_atomic_uint64
      usage_cap_fallbacks;  // rows written synchronously past a transaction's reservation cap
  pg_atomic_uint64 usage_dead_letters;  // rows token_usage refused, set aside by a worker
  LatencyStats latency;                 // decision time: histogram and moving average
  // Shadow mode and alerts (alert_queue.hpp).
  pg_atomic_uint64 shadow_denials;  // calls allowed only because shadow limits do not enforce
  pg_atomic_uint64 alerts_queued;   // alert records accepted by the alert queue
  pg_atomic_uint64 alerts_dropped;  // ... refused because it was full (alerts are best effort)
  pg_atomic_uint64 alerts_sent;     // rows inserted into rate_limit_alerts (and notified)
  // Production scale (rule_lookup.hpp, key_budget.hpp).
  pg_atomic_uint64 rule_sql_lookups;  // rules read from their table (overflowed rule table)
  pg_atomic_uint64 key_refusals;      // new counters refused because the role held its share
};

// Every monotonic counter of SharedMetrics (all but the keys_in_use gauge
// and the latency statistics), in one list: the segment's initialisation
// and reset_performance_metrics() both walk it, so a new counter cannot be
// left out of either.
template <typename F>
void for_each_metric_counter(SharedMetrics& m, F&& f) {
  for (pg_atomic_uint64* c : {&m.total_checks,
                              &m.allowed,
                              &m.denied,
                              &m.check_time_ns,
                              &m.emergency_overrides,
                              &m.burst_allocations,
                              &m.fail_open,
                              &m.fail_closed,
                              &m.lock_timeouts,
                              &m.lock_waits,
                              &m.evictions,
                              &m.emergency_refused,
                              &m.usage_rows_flushed,
                              &m.usage_queue_full_waits,
                              &m.usage_sync_fallbacks,
                              &m.usage_cap_fallbacks,
                              &m.usage_dead_letters,
                              &m.shadow_denials,
                              &m.alerts_queued,
                              &m.alerts_dropped,
                              &m.alerts_sent,
                              &m.rule_sql_lookups,
                              &m.key_refusals})
    f(c);
}

struct SharedState {
  uint32 magic;
  core::TableGeometry geometry;
  core::SipKey hash_key;  // drawn at random when the segment is created
  SharedMetrics metrics;
};

// nullptr unless the library was loaded through shared_preload_libraries.
extern SharedState* shared;

// The "rate_limiter" segment, for the map (src/pg/shared_memory.cpp).
// attach_counter_memory() returns the state; *created tells whether this
// process initialised it.  The map publishes it as `shared` once every
// segment is attached.
SegmentRequest counter_segment();
SharedState* attach_counter_memory(bool* created);

// Raises a clear error when the library was not preloaded.
void require_shared_state();

// The tagged hash of a scope of an installation (scope_key.hpp,
// installations.hpp): every counter and rule key of the scope derives from
// it with core::counter_key().
core::Hash128 installation_scope(uint64 installation, uint16 tag, core::ScopeKind scope,
                                 std::string_view user, std::string_view endpoint) noexcept;

core::CounterPartition counter_partition(uint32 partition);
// Only partition_locks.cpp takes these locks (partition_locks.hpp).
LWLock* partition_lock(uint32 partition);

}  // namespace rate_limiter::pg
