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

#include "rate_limiter/pg/installations.hpp"
#include "rate_limiter/pg/postgres.hpp"

namespace rate_limiter::pg {

// The slot of the current database's installation, registered when new;
// reclaims a stale slot of the same database first.  Raises 53400 when
// every slot is held by a live installation (rate_limiter.max_databases).
InstallationSlot* register_installation(uint64 installation);

// Sweeps the slot's counters, rules and revocations and frees the slot.
// Runs no SQL and cannot fail; returns the counters removed.
uint64 reclaim_installation(InstallationSlot* slot) noexcept;

// Every installation of one database (DROP DATABASE).
void reclaim_database(Oid database) noexcept;

void register_reclaim_hooks();  // once, from _PG_init

}  // namespace rate_limiter::pg
