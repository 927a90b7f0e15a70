// Grants made without the partition lock (failure_mode = open after a lock
// wait ran out), kept bounded.
//
// Such a grant cannot read its counters, so it is bounded by what the
// counters could give at most: the call's priority share of the quota's
// capacity, less what other lockless grants on the same counter still owe.
// The grant is charged to the counters when its transaction ends
// (transaction_effects.hpp); until then it is outstanding in this shared
// ledger, which therefore bounds all lockless grants on one counter to one
// capacity at any time, whichever sessions make them.
//
// Locking: one spinlock guards the ledger; it is held for a scan of at most
// kFailOpenEntries entries and arithmetic, nothing else, and never together
// with another lock.
#pragma once

#include "rate_limiter/pg/shmem.hpp"

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

constexpr int kFailOpenEntries = 256;

SegmentRequest fail_open_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_fail_open_memory();      // from attach_shared_memory()

// For `n` counters (keys, capacities): the largest grant of at most
// `wanted` that keeps every counter's outstanding lockless grants within
// share(capacity - outstanding) (priority_cap), recorded as outstanding.
// Returns 0 when the ledger has no room.
int64 reserve_fail_open(const core::Hash128* keys, const int64* capacities, int n, uint32 share_ppm,
                        int64 wanted) noexcept;

// The deferred charge of `units` on `key` was made: no longer outstanding.
void settle_fail_open(const core::Hash128& key, int64 units) noexcept;

}  // namespace rate_limiter::pg
