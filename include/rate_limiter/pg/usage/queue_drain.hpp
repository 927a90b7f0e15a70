// Waiting for a database's worker to write everything its database queued
// before a call, for both of its queues (usage_queue.hpp, alert_queue.hpp).
// Positions only grow; the worker consumes a stream's records only after
// the commit that wrote them, and then broadcasts the stream's `progress`
// condition variable (stream_pool.hpp).
#pragma once

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// Waits until the stream's tail passes the head seen at the call, waking
// its worker every poll interval.  Only this stream is waited for: other
// databases' backlogs never delay it.  Raises 55000, naming `what` and
// adding `hint`, when the worker makes no progress for the stall timeout
// (it is not running, restarting, or blocked on a lock the caller holds).
void wait_for_queue_drain(const StreamPool& pool, int stream, const char* what, const char* hint);

}  // namespace rate_limiter::pg
