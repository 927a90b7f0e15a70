// The revocation cache: revoked tokens of every installation (database and
// extension), as keyed hashes in one shared-memory set, so that the hot path
// never runs SQL to check a session id.
//
// Shared memory (segment "rate_limiter_revocations", sized at postmaster
// start from rate_limiter.max_revocations):
//   RevocationShared                  generation clock, installation table, set header
//   core::RevocationSlot[nslots]      the set (core/revocation_set.hpp)
//
// Each installation has an entry in a small fixed table: NotLoaded (its
// members are not in the set and must be read from token_revocations
// first), Loaded (the set holds exactly its committed revocations) or
// Overflowed (the set was full: it holds some of them, and a token it does
// not hold must be looked up in the table).  After a server start every
// installation is NotLoaded.
//
// Locking protocol
//  - One LWLock (tranche "rate_limiter_revocations") guards the whole
//    segment: LW_SHARED to look up, LW_EXCLUSIVE to change anything.
//  - It is never held together with another rate_limiter lock, and nothing
//    that can ereport, allocate, run SQL or call user code happens while it
//    is held: every function below is noexcept and only touches the segment.
//  - The only field written under LW_SHARED is an entry's `referenced` bit,
//    an atomic.
//
// Loading races (see begin/finish_revocation_load): every committed change
// to an installation's revocations moves its generation, under the
// exclusive lock, after the change became visible to new snapshots.  A
// loader reads the generation, then takes its snapshot, then installs what
// it read only if the generation did not move meanwhile.  So a change is
// either in the loader's snapshot (it moved the generation before the
// loader read it) or makes the loader retry (it moved it during the load) or
// is applied to the loaded set (it comes after the installation).  A change
// that is both in the snapshot and applied afterwards is detected (insert of
// a member, delete of a non-member) and drops the installation back to
// NotLoaded: never a lost or resurrected revocation, at worst one reload.
#pragma once

#include "rate_limiter/pg/shmem.hpp"

#include <cstddef>

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

SegmentRequest revocation_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_revocation_memory();      // from attach_shared_memory()

enum class CacheAnswer {
  Revoked,     // the token is revoked
  NotRevoked,  // the installation is loaded and does not list the token
  AskTable,    // overflowed installation, token not cached: look it up in the table
  NotLoaded,   // load the installation first
};

CacheAnswer probe_revocation_cache(uint64 installation, const core::Hash128& key) noexcept;

// Loading: begin (returns false when there is nothing to load any more),
// read the table with a snapshot taken after begin, then finish with what
// was read.  finish returns false when a change committed during the load:
// the caller starts over.
bool begin_revocation_load(uint64 installation, uint64* generation) noexcept;
bool finish_revocation_load(uint64 installation, uint64 generation, const core::Hash128* keys,
                            std::size_t n) noexcept;

// A committed change to token_revocations, applied at commit.
enum class RevocationChangeKind : uint8 {
  Insert,  // a token was revoked
  Delete,  // a token was unrevoked
  Reload,  // anything else (TRUNCATE, reload_revocations()): reload from the table
};

struct RevocationChange {
  core::Hash128 key;  // unused for Reload
  uint64 installation;
  RevocationChangeKind kind;
};

// Runs in the commit callback: plain LWLock wait and stores, cannot fail.
void apply_revocation_changes(const RevocationChange* changes, int n) noexcept;

struct RevocationCacheStatus {
  const char* state;    // "not_loaded", "loaded" or "overflowed"
  uint32 cached;        // members of this installation
  uint32 cached_total;  // members of every installation
  uint32 capacity;      // rate_limiter.max_revocations
};

RevocationCacheStatus revocation_cache_status(uint64 installation) noexcept;

// A dropped installation: its members leave the set and its entry is freed.
void forget_revocations_of(uint64 installation) noexcept;

}  // namespace rate_limiter::pg
