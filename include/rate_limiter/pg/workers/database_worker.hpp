// The per-database background worker ("rate_limiter flusher", one per
// installation, started by the launcher: launcher.hpp).
//
// It serves one installation (its registry slot and the database's
// streams of both queues) and, every rate_limiter.flush_interval (or at
// once when its usage stream passes half its share or a caller waits for a
// flush):
//   1. writes its database's queued usage events into token_usage and its
//      alerts into rate_limit_alerts (+ NOTIFY), one transaction per batch
//      (queue_flush.hpp), consuming them only after each commit;
//   2. every kUpkeepIntervalMs: upkeep.hpp (the token_limits snapshot of the
//      scopes it flushed, one retention batch).
// Does nothing while the server is in recovery.  On an error it logs,
// rolls back and retries after kErrorBackoffMs; the events stay queued.
//
// Life
//  - Start: claims its slot (worker_pid, under the registry lock) before it
//    connects: none while a database command keeps workers away
//    (database_commands.hpp), never two for one slot.  Then attaches as the
//    consumer of its two streams and connects to its database by OID.
//  - SIGTERM (shutdown, pg_terminate_backend): finishes the batch under
//    way (upkeep and retention statements are cancelled instead), writes
//    what its database has queued, exits.
//  - Exits by itself, with WorkerExit::Planned, when its slot is reclaimed
//    (DROP EXTENSION or DROP DATABASE committed), when a database command
//    asks it to (its events stay queued for its successor), when the
//    extension is no longer installed (worker_gone_at: not restarted until
//    the installation is used again), or when its database turns into a
//    template or stops accepting connections.
#pragma once

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

constexpr const char* kDatabaseWorkerType = "rate_limiter flusher";

// InstallationSlot::worker_exit.
enum class WorkerExit : uint32 {
  Unknown = 0,  // set by the launcher at start: a crash, an error, a SIGTERM leave it
  Planned = 1,  // the worker was asked to go or had nothing left to serve: no backoff
};

// The launcher's registration of a worker for slot `index`.
void describe_database_worker(BackgroundWorker* worker, int index, uint64 installation,
                              const char* database_name);

// From reclaim.cpp, before the slot is freed: drops the installation's
// queued records (when no worker consumes them; else the worker does) and
// wakes its worker, which then exits.  Cannot fail.
void release_installation_worker(InstallationSlot* slot) noexcept;

// Sets the latch of the worker of slot `index`, if one runs.
void wake_installation_worker(int index) noexcept;

}  // namespace rate_limiter::pg
