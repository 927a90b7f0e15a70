// Database commands that need a database without other sessions, while a
// rate_limiter worker (database_worker.hpp) is connected to it.
//
// DROP DATABASE, ALTER DATABASE ... RENAME TO and ... SET TABLESPACE need
// no other session in the database, and CREATE DATABASE ... TEMPLATE none
// in the template; PostgreSQL waits up to 5 s for them to go, then fails
// ("is being accessed by other users").  A worker stays connected, so a
// ProcessUtility_hook sees these statements first: it marks the database's
// installation slots as blocked by this backend (worker_blocked_by, under
// the registry lock), wakes their workers, which exit after the batch under
// way (their queued events stay queued), and waits up to kStopWaitMs for
// them to be gone.  A worker that starts meanwhile sees the block before it
// connects and does not.  The launcher starts none while the block holds;
// it ends with this backend's transaction (commit, abort or prepare), and
// the launcher is woken, so a renamed or copied database has its worker
// back at once.  A block whose backend is gone is ignored.
#pragma once

namespace rate_limiter::pg {

void register_database_command_hook();  // from _PG_init

}  // namespace rate_limiter::pg
