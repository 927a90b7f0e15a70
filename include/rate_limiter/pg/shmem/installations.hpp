// The installations this server serves: every (database, extension OID)
// pair in which the extension has been used since the server started, or
// that the counter file of the last clean shutdown remembers.
//
// Each installation has a slot in one shared array (segment
// "rate_limiter installations", rate_limiter.max_databases slots) and a
// 16-bit tag, stamped into every scope hash of the installation
// (core::with_tag): its counters and rules can then be found, and
// reclaimed when the extension or the database is dropped (reclaim.hpp),
// without keeping anything else per slot.  A tag is the slot's index + 1
// in its low kTagIndexBits bits and a reuse generation above them, so keys
// written late for a dropped installation never match its slot's next
// occupant.
//
// The slot also holds the installation's shared progress: whether its rules
// are loaded into the shared rule table (rule_table.hpp), whether its
// counters are complete (counter_recovery.hpp), and its worker
// (database_worker.hpp).
//
// Locking
//  - One LWLock (tranche "rate_limiter_installations") guards the array:
//    LW_EXCLUSIVE to register, free or change a slot's state fields.
//    Nothing under it can ereport or allocate.  The only lock ever taken
//    while it is held is a rule-table partition lock (the commit of rule
//    changes holds it shared across a batch, rule_changes.cpp).
//  - The atomics of a slot (rule_count, rules_overflowed, rule_changes,
//    longest_horizon) are read and written without the lock.
//  - `changed` is broadcast whenever a rules or counters state moves on, so
//    that sessions waiting for another session's load or rebuild wake up.
//  - tag_live[tag] is 1 while the tag's installation is live; written under
//    the lock, read without it (a stale 1 only delays a reclaim).
#pragma once

#include "rate_limiter/pg/shmem/segment.hpp"

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

constexpr int kTagIndexBits = 10;
constexpr int kMaxInstallationSlots = (1 << kTagIndexBits) - 1;

// The life of an installation's rules in the shared rule table
// (rule_loader.cpp has the transitions):
//   NotLoaded --first use--> Loading --load done--> Loaded
//   any --TRUNCATE, reload_rate_limits(), invalid load--> Resetting --swept--> NotLoaded
enum class RulesState : uint32 {
  NotLoaded = 0,  // the rule table holds nothing of this installation; commits skip it
  Loading = 1,  // a load is under way (or was interrupted): commits apply, deletes leave tombstones
  Loaded = 2,   // the rule table holds every committed rule (unless overflowed)
  Resetting = 3,  // its records are being swept; commits skip it, loads wait
};

enum class CountersState : uint32 {
  Unknown = 0,  // not known complete: rebuild from token_usage before the first decision
  Rebuilding = 1,
  Complete = 2,  // loaded from the counter file, or rebuilt since the server started
};

struct InstallationSlot {
  uint64 installation;  // database OID << 32 | extension OID; 0: free
  uint16 tag;
  uint16 generation;          // bumped when the slot is reused
  uint32 dropping;            // being reclaimed: no new users
  uint64 last_used;           // registry clock at the last registration lookup
  TimestampTz registered_at;  // when the slot was taken (a grace period for abandoned slots)

  // Rules (rule_table.hpp, rule_loader.cpp).
  RulesState rules_state;
  int32 rules_loader;                   // pid of the loading backend (Loading); 0: interrupted
  pg_atomic_uint32 rules_load_invalid;  // a change during the load could not be recorded: reset
  // Bumped by every reset; a loader writes only while it is unchanged
  // (checked under each partition lock), so nothing it read before a reset
  // survives the reset's sweep.
  pg_atomic_uint64 rules_epoch;
  pg_atomic_uint32 rules_overflowed;  // some committed rule is not in the table: misses ask SQL
  pg_atomic_uint64 rule_count;        // live records of this installation in the rule table
  pg_atomic_uint64 rule_changes;      // bumped by every change applied to the table
  // Set when a parent link reaches the table (parent_links.hpp), cleared
  // by a reset: until then no call needs to look for ancestors there.
  pg_atomic_uint32 has_parent_links;
  // The same for concurrency limits (concurrency_limits.hpp).
  pg_atomic_uint32 has_concurrency_limits;
  // An upper bound of how far back a usage row can still count for any rule
  // of the installation (microseconds); raised as rules arrive, reset by a
  // reload.  The counter rebuild and retention read it instead of scanning
  // the rule tables.
  pg_atomic_uint64 longest_horizon;

  // Counters (counter_recovery.cpp).
  CountersState counters_state;
  int32 counters_rebuilder;  // pid (Rebuilding)

  // The database's worker (database_worker.hpp, launcher.hpp,
  // database_commands.hpp); written under the lock.
  int32 worker_pid;  // the worker serving this installation; 0: none
  // A backend whose DROP DATABASE, ALTER DATABASE or CREATE DATABASE ...
  // TEMPLATE needs the database without a worker, until its transaction
  // ends; 0: none.
  int32 worker_blocked_by;
  uint32 worker_exit;  // WorkerExit (database_worker.hpp): why the last worker stopped
  uint32 reserved;
  // last_used when the worker found the extension gone from its database:
  // no worker again until the installation is used (registered) again.
  // 0: not gone.
  uint64 worker_gone_at;
};

SegmentRequest installations_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_installations_memory();      // from attach_shared_memory()

// The slot of an installation of the current database, registering it
// when it is new.  nullptr when that cannot be done now: *stale is then a
// slot of the same database with another extension OID (perhaps a dropped
// extension), for the caller to check before trying again with
// share_database (which takes a slot of its own next to it), or nullptr
// when every slot is held by a live installation.  reclaim.hpp wraps this
// (register_installation()).
InstallationSlot* try_register_installation(uint64 installation, bool share_database,
                                            InstallationSlot** stale) noexcept;
uint32 installation_capacity() noexcept;

// The slot holding `installation`, or nullptr; no registration.
InstallationSlot* find_installation(uint64 installation) noexcept;

// Every slot (for iteration by workers, reclaim, the counter file); check
// `installation != 0` before use.
InstallationSlot* installation_slots() noexcept;
int installation_slot_count() noexcept;
// The slot count the settings ask for, usable before the registry is
// attached (to size the per-installation queue streams).
int configured_installation_slots() noexcept;
// A slot's index: the number of its queue streams and of its worker.
int installation_index(const InstallationSlot* slot) noexcept;

// tag_live map for core::CounterPartition (65536 bytes).
const volatile uint8* installation_tag_live() noexcept;

LWLock* installations_lock() noexcept;
ConditionVariable* installations_changed() noexcept;

// Marks the slot as being reclaimed (its tag dead, no new users) and
// returns its tag; 0 when it was not live.  The caller then sweeps the
// tag's state and calls free_installation_slot().
uint16 begin_installation_reclaim(InstallationSlot* slot) noexcept;
void free_installation_slot(InstallationSlot* slot) noexcept;

// For the counter file at startup (the postmaster, before any backend):
// puts a saved installation back into its saved slot with its saved tag.
bool restore_installation(uint64 installation, uint16 tag, bool counters_complete) noexcept;

// Waits on `changed` until done() or the deadline; false at the deadline.
// Interruptible.  Wakes up every kInstallationPollMs too: done() may depend
// on whether another process is still alive, and a process that exits
// without an error broadcasts nothing.
constexpr long kInstallationPollMs = 100;

template <typename Done>
bool wait_for_installation_change(TimestampTz deadline, Done done) {
  ConditionVariablePrepareToSleep(installations_changed());
  bool ok = true;
  while (!done()) {
    const long wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
    if (wait_ms <= 0) {
      ok = false;
      break;
    }
    ConditionVariableTimedSleep(installations_changed(), Min(wait_ms, kInstallationPollMs),
                                PG_WAIT_EXTENSION);
  }
  ConditionVariableCancelSleep();
  return ok;
}

}  // namespace rate_limiter::pg
