// The counters across a clean restart: the way pg_stat_statements keeps its
// statistics.
//
// At a clean shutdown the postmaster (on_shmem_exit, after every backend
// has gone) writes every counter slot of a live installation, the hash key
// the slots are keyed with, the role map of the key budgets, and the live
// installations with their tags and whether their counters were complete
// (installations.hpp) to pg_stat/rate_limiter.counters, with a CRC-32C over
// the whole file, through a temporary file and a durable rename.  At the
// next start the postmaster, creating the segment, loads it before any
// backend exists, puts the installations back into their slots (rules
// load again on first use), marks the complete ones, and deletes the file,
// so that a later crash never reloads stale counters.
//
// A missing, torn or corrupt file (bad magic, version, size or checksum) is
// ignored with a LOG message; so is a file met by a server that starts in
// recovery (standby.signal or recovery.signal: a standby must not serve
// counters it did not count).  Every installation is then rebuilt from
// token_usage on first use (counter_recovery.hpp); so is every installation
// when some saved counters did not fit (rate_limiter.max_keys lowered).
#pragma once

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

void load_counter_file();                         // postmaster, at segment creation
void save_counter_file_at_exit(int code, Datum);  // on_shmem_exit callback

// Whether the server is going down after a shutdown checkpoint (the control
// file says DB_SHUTDOWNED): a clean shutdown, not a crash or an immediate
// one.  Plain reads, no ereport: for the postmaster's exit callbacks.
bool server_shut_down_cleanly();

}  // namespace rate_limiter::pg
