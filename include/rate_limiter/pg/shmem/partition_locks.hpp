// The counter table's partition locks: the one module that takes them.
//
// Partition i of the counter table (shared_state.hpp) is guarded by LWLock i
// of the "rate_limiter" tranche.  Every acquisition goes through here:
//  - acquire_partitions(): several partitions in ascending order with a
//    bounded wait (the decision, rate_limit_headers' preview, the abuse
//    counter, counter reads);
//  - lock_partition(): one partition, blocking, for code that must not fail
//    (transaction callbacks applying refunds and resets, the rebuild's
//    merge, the reclaim sweep).  Holding one partition and then asking for
//    another this way is forbidden (it would break the global order).
//
// Taking several partition locks in the global order, with a bounded wait:
// LWLocks have no timeout, so a wait is a loop of conditional acquires with
// backoff (spin, then yield, then short sleeps) until
// rate_limiter.lock_timeout runs out.  Nothing in the loop can ereport: on a
// timeout the locks already taken are released and the caller raises 55P03
// (or fails open) afterwards.  Critical sections last well under a
// microsecond, so waits are normally short; the bound matters when a holder
// is descheduled or stopped.
#pragma once

#include <cstdint>

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// Every counter of a scope lives in one partition (core::counter_key), and
// a call touches at most these scopes: the user on the endpoint, the user,
// the endpoint, and each ancestor on the endpoint and on all endpoints.
constexpr int kMaxLockedPartitions = 3 + 2 * rate_limiter::core::kMaxAncestors;

// A sorted, duplicate-free set of partition numbers.
struct PartitionSet {
  uint32 ids[kMaxLockedPartitions];
  int count = 0;

  void add(uint32 partition) noexcept;  // keeps ids sorted and unique
};

// Acquires every partition in ascending order.  timeout_ms == 0 waits without
// bound.  Returns false after a timeout, holding nothing.
bool acquire_partitions(const PartitionSet& set, LWLockMode mode, int timeout_ms) noexcept;

void release_partitions(const PartitionSet& set) noexcept;

// One partition, waiting without bound; nothing else held of this tranche.
void lock_partition(uint32 partition, LWLockMode mode) noexcept;
void unlock_partition(uint32 partition) noexcept;

}  // namespace rate_limiter::pg
