// The in-flight leases of concurrency limits (rules/concurrency_limits.hpp),
// in one shared table for the whole server (core::LeaseTable, sized by
// rate_limiter.max_leases).
//
// Life of a lease:
//   - taken by decide_call() for each concurrency limit of an allocation it
//     grants, under the call's partition locks and the lease lock, after
//     checking every limit's room: the grant, its token and request charges
//     and its leases are all or nothing;
//   - bound to the grant key {installation, allocation_id} once the usage
//     row has its id (bind_call_leases);
//   - ended by whichever comes first: settle_tokens of that allocation (at
//     the settling transaction's commit, in whatever backend), the abort of
//     the allocating transaction when its charge follows it
//     (refund_on_abort, or a usage row written in that transaction), the
//     exit of the allocating backend (before_shmem_exit), or lease_timeout
//     (swept lazily by the next call that finds the scope full).  A crash
//     of any backend reinitialises shared memory, and with it the table:
//     every backend that held a lease is gone by then.
//
// Locking: one LWLock ("rate_limiter_leases"), a leaf taken after the
// counter partition locks (shared_memory.cpp, lock order); held for table
// arithmetic only.  Holding it across the decision itself (pure
// arithmetic) is what makes the room check and the take one step.
#pragma once

#include "rate_limiter/core/lease_table.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

SegmentRequest lease_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_lease_memory();      // from attach_shared_memory()

// The leases one call took: [0, count).
struct CallLeases {
  int count = 0;
  core::LeaseHandle handles[2];
};

// Under the call's partition locks (decide_call): the lease lock and the
// table.  lease_owner(): this backend's identity in the table.
void lock_leases() noexcept;
void unlock_leases() noexcept;
core::LeaseTable lease_table() noexcept;
int32 lease_owner() noexcept;

// Phase 1, before a call that may take leases: makes sure this backend's
// exit frees what it holds.
void ensure_lease_exit_hook();

// The grant key of an allocation of this installation:
// {ExtensionCatalog::installation, allocation_id}.
core::Hash128 lease_grant_key(uint64 installation, int64 allocation_id) noexcept;

// After the usage row got its id: binds the call's leases to the grant.
void bind_call_leases(const CallLeases& leases, const core::Hash128& grant) noexcept;

// Phase 1 of a call that may take leases: room for its two effects below,
// so that recording them after the locks cannot fail.
void reserve_lease_effects();

// The allocating transaction's abort (or the rollback of the savepoint the
// call ran in) ends the call's leases: its charge follows the transaction.
void release_leases_on_abort(const CallLeases& leases);

// The same, but only until leases_bound(mark): an abort before the grant
// has its id (an error or a cancel while its usage row is being queued)
// leaves no allocation to settle.  Returns the mark (0: nothing recorded).
uint32 release_leases_unless_bound(const CallLeases& leases);
void leases_bound(uint32 mark) noexcept;

// settle_tokens: the grant's leases end when the settling transaction
// commits (PREPARE TRANSACTION is refused then).  Allocates.
void release_grant_leases_at_commit(const core::Hash128& grant);

// A dropped installation (workers/reclaim): its leases end.
void release_installation_leases(uint16 tag) noexcept;

// Live leases of a scope now (expired ones swept), and when the earliest
// of them times out (0: none), for the status views.
int32 leases_in_flight(const core::Hash128& lease_scope, int64 now, int64* earliest) noexcept;

void register_lease_effects();  // once, from _PG_init (before register_transaction_log())

}  // namespace rate_limiter::pg
