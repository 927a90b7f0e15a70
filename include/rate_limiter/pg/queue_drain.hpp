// Waiting for the flusher to write everything queued before a call, for
// both of its single-consumer queues (usage_queue.hpp, alert_queue.hpp).
// Positions only grow; the flusher moves a queue's tail only after the
// commit that wrote the records, and then broadcasts the queue's
// `progress` condition variable.
#pragma once

#include "rate_limiter/pg/postgres.hpp"

namespace rate_limiter::pg {

struct QueueWindow {
  uint64 tail;
  uint64 head;
};

// Waits until the tail passes the head seen at the call, re-waking the
// flusher every poll interval.  Raises 55000, naming `what` and adding
// `hint`, when the flusher makes no progress for the stall timeout (it is
// not running, restarting, or blocked on a lock the caller holds).
void wait_for_queue_drain(ConditionVariable* progress, QueueWindow (*read_window)(), const char* what,
                          const char* hint);

}  // namespace rate_limiter::pg
