// The "rate_limiter launcher" background worker: one database worker
// (database_worker.hpp) per database where the extension is installed.
//
// It connects to no database (it reads only the shared catalog
// pg_database) and discovers installations through the registry
// (installations.hpp), never by probing databases: a backend registers its
// installation on first use, CREATE EXTENSION and ALTER EXTENSION UPDATE
// register it and wake the launcher at commit (rate_limiter_serve_database()),
// and after a clean restart the registry is restored from the counter file
// before any backend runs, so the known installations get their workers at
// start.  A database without the extension costs nothing.
//
// Every kLauncherPollMs (and whenever a worker starts or stops, an
// installation registers, or a database command ends) it looks at every
// slot: a live installation whose database can be served
// (database_can_be_served()) and that has no worker gets one, unless a
// database command keeps workers away (database_commands.hpp) or its
// worker found the extension gone and nobody used the installation since.
// A worker that stopped without being asked to (an error, a crash,
// pg_terminate_backend) is restarted after kRestartBaseMs, doubled for each
// quick failure in a row, at most kRestartMaxMs.  When no background worker
// slot is free (max_worker_processes) it warns once per database and
// retries.
//
// Worker slots: the launcher takes one, each served database one more.
#pragma once

#include "rate_limiter/pg/shmem.hpp"

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

constexpr const char* kLauncherType = "rate_limiter launcher";

void register_launcher();  // from _PG_init: the static worker and the commit callback

SegmentRequest launcher_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_launcher_memory();      // from attach_shared_memory()

// Sets the launcher's latch, if it runs.  Cannot fail.
void wake_launcher() noexcept;

// In a transaction, from any process (connected to a database or not):
// whether `database` may have a worker.  It must exist (and not be half
// dropped), not be a template, accept connections and, when
// rate_limiter.database is set, be that database.  *name (if not nullptr)
// gets its name.
bool database_can_be_served(Oid database, NameData* name);

}  // namespace rate_limiter::pg
