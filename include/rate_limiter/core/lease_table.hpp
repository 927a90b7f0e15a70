// In-flight leases: the state behind concurrency limits.
//
// A concurrency limit of a scope allows at most `max_in_flight` granted
// allocations of that scope to be outstanding at once.  Each grant under
// such a limit takes one lease per limited scope; a lease ends when its
// grant is settled, when the backend that took it exits, or when it
// expires (lease_timeout), whichever comes first.
//
// The table lives in one caller-provided block of memory (shared memory
// in PostgreSQL, a vector in the unit tests) and never allocates:
//   - a slab of `capacity` leases, free ones on a free list;
//   - a scope index (open addressing, backward-shift erase): one slot per
//     scope with live leases, holding its in-flight count, the head of its
//     lease list (doubly linked through the slab) and a lower bound of its
//     leases' expiry times;
//   - a grant index (the same shape): grant key -> first lease of the
//     grant; the leases of one grant are chained.
// A lease is taken unbound (its grant's id is not known until the grant's
// usage row is written) and bound to its grant key afterwards; until then
// it is known by its handle (index + generation), which stays valid only
// while the lease does.
//
// Expiry is lazy: a scope's expired leases are swept when a call finds the
// scope full and the scope's earliest expiry has passed, so a call pays for
// expiry only at the limit; and the whole table's when a call finds no free
// lease and the table's earliest expiry has passed (make_room).  `earliest` is a lower bound that
// is exact after a sweep; removing the lease that held it marks it stale (0), which makes the next
// full-scope call sweep and recompute it.
//
// All functions are noexcept and take `now` from the caller.  The caller
// serialises every call on one table (one LWLock in PostgreSQL).
#pragma once

#include <cstddef>
#include <cstdint>

#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {

constexpr uint32_t kMaxLeaseCapacity = 1u << 24;
constexpr int32_t kMaxInFlight = 1'000'000;

struct Lease {
  Hash128 scope;  // {0,0}: free
  Hash128 grant;  // {0,0}: not bound yet
  int64_t taken_at = 0;
  int64_t expires_at = 0;
  int32_t owner = -1;  // who took it (a backend's process number)
  int32_t prev = -1;   // the scope's lease list
  int32_t next = -1;   // the scope's lease list; the free list for free leases
  int32_t next_of_grant = -1;
  uint32_t generation = 0;  // bumped when the lease is taken
  // The caller's, carried as they are: who to show (a process id) and
  // which group of grants it belongs to (an installation).
  int32_t owner_pid = 0;
  uint32_t group = 0;
};

struct LeaseScopeSlot {
  Hash128 key;  // {0,0}: empty
  int32_t in_flight = 0;
  int32_t head = -1;
  int64_t earliest = 0;  // lower bound of the leases' expires_at; 0: unknown
};

struct LeaseGrantSlot {
  Hash128 key;  // {0,0}: empty
  int32_t first = -1;
  int32_t reserved = 0;
};

struct LeaseTableHeader {
  uint32_t capacity = 0;
  uint32_t nslots = 0;  // of each index: > capacity
  uint32_t used = 0;    // leases in use
  int32_t free_head = -1;
  int64_t earliest = 0;  // lower bound of every lease's expires_at; 0: unknown
};

struct LeaseHandle {
  int32_t index = -1;
  uint32_t generation = 0;
};

// What a scope has room for at `now` under a limit of `max_in_flight`.
struct LeaseRoom {
  bool ok = false;        // in_flight < max_in_flight
  int32_t in_flight = 0;  // live leases of the scope
  int64_t retry_at = 0;   // !ok: when the earliest lease expires
};

class LeaseTable {
 public:
  // Bytes of a table of `capacity` leases (1 .. kMaxLeaseCapacity).
  static std::size_t bytes_for(uint32_t capacity) noexcept;
  // Formats `memory` (bytes_for(capacity) bytes, 8-aligned) as an empty table.
  static void initialize(void* memory, uint32_t capacity) noexcept;

  explicit LeaseTable(void* memory) noexcept;

  // The scope's live leases at `now`, sweeping its expired ones when the
  // scope is at `max_in_flight` and the earliest may have expired.
  LeaseRoom room(const Hash128& scope, int32_t max_in_flight, int64_t now) noexcept;

  // Free leases left.
  uint32_t free_count() const noexcept { return header_->capacity - header_->used; }

  // Makes `n` leases free if expired ones can be: when fewer are free and
  // the table's earliest expiry has passed, sweeps the whole table of
  // expired leases (every scope, limited or not at its limit).  Returns
  // whether n are free; if not, *retry_at is when the earliest lease
  // expires.
  bool make_room(uint32_t n, int64_t now, int64_t* retry_at) noexcept;

  // A new unbound lease of `scope`, expiring at expires_at.  Requires a
  // free lease (free_count() > 0; else returns an invalid handle).
  LeaseHandle take(const Hash128& scope, int64_t now, int64_t expires_at, int32_t owner,
                   int32_t owner_pid = 0, uint32_t group = 0) noexcept;

  // Binds a lease to its grant; false when the handle no longer names a
  // live unbound lease (it expired and was swept meanwhile).
  bool bind(LeaseHandle h, const Hash128& grant) noexcept;

  // Ends one lease by handle (a grant that never got its id); false when
  // the handle no longer names a live lease.
  bool release(LeaseHandle h) noexcept;

  // Whether any lease is bound to `grant`.
  bool has_grant(const Hash128& grant) const noexcept { return find_grant(grant) >= 0; }

  // Ends every lease of `grant`; returns how many.
  int release_grant(const Hash128& grant) noexcept;

  // Ends every lease taken by `owner`; returns how many (a scan of the slab).
  int release_owner(int32_t owner) noexcept;
  // Ends every lease of `group`; returns how many (a scan of the slab).
  int release_group(uint32_t group) noexcept;

  // Read-only views for monitoring.
  uint32_t capacity() const noexcept { return header_->capacity; }
  uint32_t used() const noexcept { return header_->used; }
  const Lease& lease_at(uint32_t i) const noexcept { return leases_[i]; }
  // Live leases of `scope` (expired ones not yet swept included).
  int32_t in_flight(const Hash128& scope) const noexcept;

 private:
  uint32_t home(const Hash128& key) const noexcept;
  int64_t find_scope(const Hash128& key) const noexcept;  // slot index or -1
  int64_t find_grant(const Hash128& key) const noexcept;
  void end_lease(int32_t index) noexcept;
  void sweep(uint32_t scope_slot, int64_t now) noexcept;

  LeaseTableHeader* header_;
  Lease* leases_;
  LeaseScopeSlot* scopes_;
  LeaseGrantSlot* grants_;
};

}  // namespace rate_limiter::core
