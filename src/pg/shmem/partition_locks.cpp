#include "rate_limiter/pg/shmem/partition_locks.hpp"

#include <sched.h>
#include <ctime>

#include "rate_limiter/pg/shmem/shared_state.hpp"

namespace rate_limiter::pg {
namespace {

int64_t monotonic_us() noexcept {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// Waits for one lock until deadline_us.  Backoff: a few spins (the holder is
// probably running on the other core), then yields (it may be runnable but
// descheduled), then sleeps that double from 10 us up to 1 ms.
bool acquire_with_deadline(LWLock* lock, LWLockMode mode, int64_t deadline_us) noexcept {
  long sleep_us = 10;
  for (int attempt = 1;; ++attempt) {
    if (LWLockConditionalAcquire(lock, mode)) return true;
    if (attempt < 64) {
      pg_spin_delay();
      continue;
    }
    if (monotonic_us() >= deadline_us) return false;
    if (attempt < 128) {
      sched_yield();
    } else {
      pg_usleep(sleep_us);
      sleep_us = sleep_us < 1000 ? sleep_us * 2 : 1000;
    }
  }
}

}  // namespace

void PartitionSet::add(uint32 partition) noexcept {
  int i = 0;
  while (i < count && ids[i] < partition) ++i;
  if (i < count && ids[i] == partition) return;
  if (count == kMaxLockedPartitions) return;  // cannot happen: one partition per scope
  for (int j = count; j > i; --j) ids[j] = ids[j - 1];
  ids[i] = partition;
  ++count;
}

bool acquire_partitions(const PartitionSet& set, LWLockMode mode, int timeout_ms) noexcept {
  int64_t deadline_us = 0;
  for (int i = 0; i < set.count; ++i) {
    LWLock* lock = partition_lock(set.ids[i]);
    if (LWLockConditionalAcquire(lock, mode)) continue;
    // Someone holds it: count the wait (an atomic add, safe under the locks
    // already taken: it cannot fail or allocate).
    pg_atomic_fetch_add_u64(&shared->metrics.lock_waits, 1);
    if (timeout_ms == 0) {
      LWLockAcquire(lock, mode);
      continue;
    }
    if (deadline_us == 0) deadline_us = monotonic_us() + static_cast<int64_t>(timeout_ms) * 1000;
    if (!acquire_with_deadline(lock, mode, deadline_us)) {
      for (int j = i - 1; j >= 0; --j) LWLockRelease(partition_lock(set.ids[j]));
      return false;
    }
  }
  return true;
}

void release_partitions(const PartitionSet& set) noexcept {
  for (int i = set.count - 1; i >= 0; --i) LWLockRelease(partition_lock(set.ids[i]));
}

void lock_partition(uint32 partition, LWLockMode mode) noexcept {
  LWLockAcquire(partition_lock(partition), mode);
}

void unlock_partition(uint32 partition) noexcept { LWLockRelease(partition_lock(partition)); }

}  // namespace rate_limiter::pg
