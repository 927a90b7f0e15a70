// The map of the extension's shared memory.
//
// Every segment is sized once, at postmaster start, from settings that need
// a restart; shared_memory_bytes() is their sum and request_shared_memory()
// asks for it and for every LWLock tranche here, in one place.  Each
// subsystem owns its layout (X_segment() says its size, attach_X_memory()
// finds or initialises it in every process).
//
//   segment                       tranche (LWLocks)          sized by
//   "rate_limiter"                "rate_limiter"             rate_limiter.max_keys
//     SharedState (hash key,        (one per counter
//     metrics), then the counter    partition)
//     table: PartitionHeader[],
//     CounterSlot[]               (shmem/shared_state.hpp)
//   "rate_limiter rules"          "rate_limiter_rules"       rate_limiter.max_rules
//     the shared rule table         (one per rule partition)
//                                 (rules/rule_table.hpp)
//   "rate_limiter installations"  "rate_limiter_installations" (1)
//     every (database, extension)                            rate_limiter.max_databases
//     this server serves          (shmem/installations.hpp)
//   "rate_limiter_revocations"    "rate_limiter_revocations" (1)
//     revoked session ids                                    rate_limiter.max_revocations
//                                 (revocations/revocation_cache.hpp)
//   "rate_limiter usage queue"    "rate_limiter_usage_queue" rate_limiter.usage_queue_size,
//     token_usage rows on their     (one per stream = per    max_databases
//     way, a stream per database    installation slot)
//                                 (usage/usage_queue.hpp, shmem/stream_pool.hpp)
//   "rate_limiter alert queue"    "rate_limiter_alert_queue" rate_limiter.alert_queue_size,
//     alert records on their way    (one per stream)         max_databases
//                                 (alerts/alert_queue.hpp)
//   "rate_limiter key budget"     none (written under the    fixed: core::kMaxOwners
//     role -> owner tally map       installations lock)
//                                 (engine/key_budget.hpp)
//   "rate_limiter fail-open ledger" a spinlock               fixed: kFailOpenEntries
//     grants made without the
//     partition lock              (engine/fail_open.hpp)
//   "rate_limiter launcher"       a spinlock                 fixed
//     the launcher's latch and
//     requests                    (workers/launcher.hpp)
//   "rate_limiter time zones"     a spinlock                 fixed: kMaxTimeZones
//     period_timezone names
//                                 (rules/time_zones.hpp)
//   "rate_limiter leases"         "rate_limiter_leases" (1)  rate_limiter.max_leases
//     in-flight leases of
//     concurrency limits          (engine/leases.hpp)
//
// Lock order (a lock may be taken while holding only those above it):
//   1. the installations lock (shared or exclusive; installations.hpp);
//   2. rule-table partition locks, one at a time (rule_table.hpp);
//   3. counter partition locks, several in ascending partition number, all
//      taken and released by shmem/partition_locks.cpp;
//   4. a queue stream's lock (one stream at a time), then its pool's
//      free-list spinlock (stream_pool.hpp);
//   5. the revocation lock, the fail-open spinlock, the launcher's
//      spinlock, the time zone spinlock and the lease lock are leaves: nothing is taken while
//      holding them.  The lease lock is taken by decide_call() while it
//      holds the call's partition locks (leases.hpp), alone elsewhere.
// No two counter-partition holders wait on each other out of order, and no
// rate_limiter lock is held across anything that can ereport, allocate,
// run SQL or call user code: only the pure core's arithmetic and copies
// run under them.  Metrics are atomics, read and written without a lock.
#include "rate_limiter/pg/shared_memory.hpp"

#include <array>

#include "rate_limiter/pg/alerts.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/revocations.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/usage.hpp"
#include "rate_limiter/pg/workers.hpp"

namespace rate_limiter::pg {

namespace {

std::array<SegmentRequest, 11> segments() {
  return {counter_segment(),    rule_table_segment(),  installations_segment(),
          revocation_segment(), usage_queue_segment(), alert_queue_segment(),
          key_budget_segment(), fail_open_segment(),   launcher_segment(),
          lease_segment(),      time_zone_segment()};
}

}  // namespace

Size shared_memory_bytes() {
  Size total = 0;
  for (const SegmentRequest& s : segments()) total = add_size(total, s.bytes);
  return total;
}

void request_shared_memory() {
  RequestAddinShmemSpace(shared_memory_bytes());
  for (const SegmentRequest& s : segments())
    if (s.tranche != nullptr) RequestNamedLWLockTranche(s.tranche, s.locks);
}

void attach_shared_memory() {
  bool created = false;
  SharedState* state = attach_counter_memory(&created);
  attach_revocation_memory();
  attach_usage_queue_memory();
  attach_alert_queue_memory();
  attach_installations_memory();
  attach_rule_table_memory();
  attach_key_budget_memory();
  attach_launcher_memory();
  attach_fail_open_memory();
  attach_lease_memory();
  attach_time_zone_memory();
  shared = state;
  // The postmaster, creating the segments: load the counters and the queued
  // usage events saved at the last clean shutdown, and save them at this
  // server's clean shutdown.
  if (created && !IsUnderPostmaster) {
    load_counter_file();
    load_usage_queue_file();
    on_shmem_exit(save_counter_file_at_exit, 0);
    on_shmem_exit(save_usage_queue_file_at_exit, 0);
  }
}

}  // namespace rate_limiter::pg
