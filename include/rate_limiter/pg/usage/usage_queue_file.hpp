// Queued usage events across a clean restart.
//
// The usage queue lives in shared memory.  A database's worker writes its
// queue at SIGTERM, but a clean shutdown can find a database without a
// running worker: terminated (pg_terminate_backend) and not restarted yet,
// waiting for a free worker slot, or kept away by a database command.  So
// at a clean shutdown the postmaster (on_shmem_exit, after every other
// process has gone, next to the counter file: counter_file.hpp) writes
// every event still queued for a live installation to
// pg_stat/rate_limiter.usage_queue, with the installation and its tag, a
// CRC-32C over the whole file, through a temporary file and a durable
// rename.  At the next start the postmaster, creating the segment, queues
// them again (after the counter file has put the installations back into
// their slots; an installation the counter file did not restore is put back
// from the queue file) before any process exists, and deletes the file; the
// database's worker then writes them as it writes any queued event.  Their
// counters come back with the counter file, so counters and rows agree.
// (If the counter file could not be used, the installation is rebuilt from
// token_usage at its first call, and a rebuild that runs before the worker
// has written these events does not count them.)
//
// Nothing is written after a crash or an immediate shutdown (shared memory
// is not trusted then: the events are lost, the documented async loss
// bound).  A torn or corrupt file, or one written by a version with
// another record layout, is ignored with a LOG message; events that find
// no room (rate_limiter.usage_queue_size lowered across the restart) are
// counted in a WARNING.
#pragma once

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

void load_usage_queue_file();  // postmaster, at segment creation, after load_counter_file()
void save_usage_queue_file_at_exit(int code, Datum);  // on_shmem_exit callback

}  // namespace rate_limiter::pg
