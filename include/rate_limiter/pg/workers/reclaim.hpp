// Reclaiming what a dropped installation holds in shared memory: its
// counters, its rules, its revocations and its registry slot.
//
// DROP EXTENSION rate_limiter and DROP DATABASE are seen by an object
// access hook; the reclaim runs when the dropping transaction commits (a
// rolled-back drop reclaims nothing).  Each sweep walks one table partition
// by partition under the partition's lock (plain blocking waits, no
// allocation: it runs in the commit callback).  Keys written for the
// installation after its sweep (by a call that was already under way) carry
// a dead tag and are evicted like expired counters (counter_table.hpp).
// A slot left by an extension dropped while this server did not see it (a
// restored counter file) is reclaimed when the database registers its new
// installation.
#pragma once

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// The slot of the current database's installation, registered when new.
// A slot of the same database with another extension OID is reclaimed
// first if that extension no longer exists for good (committed); if it
// may still (its drop is this transaction's, uncommitted), both keep a
// slot.  Raises 53400 when every slot is held by a live installation
// (rate_limiter.max_databases).
InstallationSlot* register_installation(uint64 installation);

// Whether no committed pg_extension row has this OID (this transaction's
// own uncommitted changes ignored).  Catalog access: a transaction is open.
bool extension_committed_gone(Oid extension);

// A database's worker, in a transaction: reclaims the slots of its
// database other than `keep` whose extension is gone for good and that
// were registered more than kAbandonedGraceMs ago (a CREATE EXTENSION that
// rolled back, a prepared DROP EXTENSION that committed elsewhere).
constexpr long kAbandonedGraceMs = 60000;
void reclaim_abandoned_installations(Oid database, uint64 keep);

// Sweeps the slot's counters, rules and revocations and frees the slot.
// Runs no SQL and cannot fail; returns the counters removed.
uint64 reclaim_installation(InstallationSlot* slot) noexcept;

// Every installation of one database (DROP DATABASE).
void reclaim_database(Oid database) noexcept;

void register_reclaim_hooks();  // once, from _PG_init

}  // namespace rate_limiter::pg
