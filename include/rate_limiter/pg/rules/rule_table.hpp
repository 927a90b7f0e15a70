// The shared rule table: every installation's committed rules, keyed by
// tagged scope hash and kind, in shared memory (segment "rate_limiter
// rules", rate_limiter.max_rules records; core/rule_table.hpp holds the
// layout).
//
// Readers take no lock.  Each partition has a sequence counter next to its
// LWLock: a writer holds the partition lock exclusively, makes the counter
// odd, writes, and makes it even again; a reader copies the record out
// between two reads of an even, unchanged counter (as PostgreSQL's
// st_changecount protocol for backend status).  After a few unlucky tries
// (a writer was busy, or descheduled mid-write) the reader takes the
// partition lock in shared mode instead.
//
// Writers: the commit of a transaction that changed rule rows
// (rule_changes.hpp), the loader (rule_loader.cpp) and the reclaim of a
// dropped installation (reclaim.hpp).  Lock order: a writer may hold the
// installations lock (shared) while it takes partition locks of this table,
// never the reverse; no other rate_limiter lock is taken under them.  Every
// function here is noexcept and does only probes and stores under the lock.
#pragma once

#include "rate_limiter/pg/shmem.hpp"

#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

SegmentRequest rule_table_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_rule_table_memory();      // from attach_shared_memory()

enum class RuleProbe : uint8 { Absent, Present, Tombstone };

// Copies the key's record out.  Lock-free (see above).
RuleProbe rule_table_get(const core::Hash128& key, core::RuleRecord* out) noexcept;

// Writes under the key's partition lock.
core::RuleWrite rule_table_upsert(const core::Hash128& key,
                                  const core::RuleRecord& record) noexcept;
// The loader's write: insert_if_absent, but only while *epoch still equals
// `expected` (read under the partition lock; a reset bumps it before it
// sweeps).  *stale: the epoch moved, nothing was written.
core::RuleWrite rule_table_load(const core::Hash128& key, const core::RuleRecord& record,
                                const pg_atomic_uint64* epoch, uint64 expected,
                                bool* stale) noexcept;
// Returns whether a live record went; *no_room: a tombstone was asked for
// and could not be written.
bool rule_table_erase(const core::Hash128& key, bool tombstone, bool* no_room) noexcept;

// Every partition in turn: removes the tag's records (live ones counted in
// the result) or only its tombstones.
uint64 rule_table_sweep_tag(uint16 tag) noexcept;
// Only while *epoch still equals `expected` (checked under each partition
// lock): after a reset, the tombstones belong to the next load.
uint64 rule_table_sweep_tombstones(uint16 tag, const pg_atomic_uint64* epoch,
                                   uint64 expected) noexcept;

struct RuleTableStats {
  uint64 live;        // records of every installation (tombstones excluded)
  uint64 capacity;    // what the table admits
  uint64 tombstones;  // of every installation
};
RuleTableStats rule_table_stats() noexcept;

}  // namespace rate_limiter::pg
