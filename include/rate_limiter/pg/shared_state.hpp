// The extension's shared memory: one segment named "rate_limiter".
//
// Layout (sizes fixed at postmaster start from rate_limiter.max_keys):
//   SharedState                       header, metrics, rule generation
//   PartitionHeader[partitions]       one cache line each
//   CounterSlot[partitions * slots]   the counters, partition after partition
// Revoked tokens live in a second segment with its own lock, requested and
// attached from here (revocation_cache.hpp); so does the usage queue
// (usage_queue.hpp).
//
// Locking protocol
//  - Counter partition i is guarded by LWLock i of the "rate_limiter"
//    tranche.  Read a slot under LW_SHARED, write under LW_EXCLUSIVE.
//  - A call that touches several partitions takes their locks in ascending
//    partition number, and releases them all before doing anything else.
//  - Nothing that can ereport, allocate, run SQL or call user code happens
//    while a partition lock is held: only the pure core's arithmetic.
//  - Metrics and the rule generation are atomics, read and written without
//    any lock.
#pragma once

#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/latency_histogram.hpp"
#include "rate_limiter/pg/postgres.hpp"

namespace rate_limiter::pg {

// Counters read without a lock.  Each is monotonic except keys_in_use,
// until reset_performance_metrics() zeroes every one of them but keys_in_use
// (metrics.cpp: reset_metrics()).
struct SharedMetrics {
  pg_atomic_uint64 total_checks;     // decisions made by allocate/check/enforce
  pg_atomic_uint64 allowed;
  pg_atomic_uint64 denied;
  pg_atomic_uint64 check_time_ns;    // summed wall time of those calls
  pg_atomic_uint64 emergency_overrides;
  pg_atomic_uint64 burst_allocations;
  pg_atomic_uint64 fail_open;        // calls allowed by failure_mode = open
  pg_atomic_uint64 fail_closed;      // calls refused by failure_mode = closed
  pg_atomic_uint64 lock_timeouts;
  pg_atomic_uint64 lock_waits;       // partition lock acquisitions that found the lock taken
  pg_atomic_uint64 evictions;
  pg_atomic_uint64 keys_in_use;      // occupied counter slots
  pg_atomic_uint64 emergency_refused;  // emergency_override asked without the privilege
  // The usage log (usage_queue.hpp).
  pg_atomic_uint64 usage_rows_flushed;    // rows the flusher inserted
  pg_atomic_uint64 usage_queue_full_waits;  // events that found the queue full
  pg_atomic_uint64 usage_sync_fallbacks;  // ... and were then written synchronously
  LatencyStats latency;              // decision time: histogram and moving average
  // Shadow mode and alerts (alert_queue.hpp).
  pg_atomic_uint64 shadow_denials;   // calls allowed only because shadow limits do not enforce
  pg_atomic_uint64 alerts_queued;    // alert records accepted by the alert queue
  pg_atomic_uint64 alerts_dropped;   // ... refused because it was full (alerts are best effort)
  pg_atomic_uint64 alerts_sent;      // rows inserted into rate_limit_alerts (and notified)
};

// Which installations (database + extension) have complete counters in
// shared memory: those loaded from the state file at startup, and those
// rebuilt from token_usage since (counter_recovery.hpp).  Any other
// installation (after a crash, a promotion, a pg_restore or CREATE
// EXTENSION) is rebuilt before its first decision.  Guarded by
// the lock of the "rate_limiter_recovery" tranche.
constexpr int kMaxRecoveryEntries = 64;

enum RecoveryStatus : uint32 { kRecoveryNone = 0, kRecoveryRunning = 1, kRecoveryDone = 2 };

struct RecoveryEntry {
  uint64 installation;  // 0: unused
  uint32 status;        // RecoveryStatus
  int32 pid;            // the backend rebuilding (kRecoveryRunning)
  uint64 last_used;     // for reusing the oldest entry when all are taken
};

struct RecoveryState {
  uint64 clock;  // bumped per use; RecoveryEntry::last_used
  ConditionVariable done;  // broadcast when a rebuild ends (or fails)
  RecoveryEntry entries[kMaxRecoveryEntries];
};

struct SharedState {
  uint32 magic;
  core::TableGeometry geometry;
  core::SipKey hash_key;             // drawn at random when the segment is created
  // Bumped after every commit that changed a rule table; a backend whose
  // rule cache carries an older value reloads it before its next decision.
  pg_atomic_uint64 rules_generation;
  SharedMetrics metrics;
  RecoveryState recovery;
};

// nullptr unless the library was loaded through shared_preload_libraries.
extern SharedState* shared;

void request_shared_memory();  // from shmem_request_hook
void attach_shared_memory();   // from shmem_startup_hook

// Raises a clear error when the library was not preloaded.
void require_shared_state();

core::CounterPartition counter_partition(uint32 partition);
LWLock* partition_lock(uint32 partition);
LWLock* recovery_lock();

}  // namespace rate_limiter::pg
