// Cluster-wide metrics in shared memory (atomics, no locks).
#pragma once

#include <cstdint>

#include "rate_limiter/pg/shmem/shared_state.hpp"

namespace rate_limiter::pg {

// Monotonic nanoseconds, for measuring call time.
int64_t monotonic_ns() noexcept;

inline void metric_add(pg_atomic_uint64* counter, uint64 n = 1) noexcept {
  pg_atomic_fetch_add_u64(counter, n);
}

// One decision by allocate_tokens, check_rate_limit or enforce_rate_limit.
void record_decision(bool allowed, int64_t started_ns) noexcept;

// Zeroes every counter and the latency statistics; keys_in_use stays.
// Concurrent callers may add to a counter between two writes: a reset is
// not atomic across counters (documented under "Monitoring").
void reset_metrics() noexcept;

}  // namespace rate_limiter::pg
