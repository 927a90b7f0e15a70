#include "rate_limiter/pg/usage/queue_drain.hpp"

namespace rate_limiter::pg {
namespace {

// How often a waiter re-checks (and re-wakes the worker), and how long it
// tolerates a worker that makes no progress before it raises an error
// instead of waiting forever.
constexpr long kPollMs = 100;
constexpr long kStallTimeoutMs = 30000;

void wake(const StreamPool& pool, int stream) {
  if (Latch* latch = pool.consumer_latch(stream)) SetLatch(latch);
}

}  // namespace

void wait_for_queue_drain(const StreamPool& pool, int stream, const char* what, const char* hint) {
  StreamWindow w = pool.window(stream);
  const uint64 target = w.head;
  if (w.tail >= target) return;
  uint64 last_tail = w.tail;
  TimestampTz last_progress = GetCurrentTimestamp();
  ConditionVariable* progress = pool.progress(stream);
  ConditionVariablePrepareToSleep(progress);
  for (;;) {
    wake(pool, stream);
    ConditionVariableTimedSleep(progress, kPollMs, PG_WAIT_EXTENSION);
    w = pool.window(stream);
    if (w.tail >= target) break;
    const TimestampTz now = GetCurrentTimestamp();
    if (w.tail != last_tail) {
      last_tail = w.tail;
      last_progress = now;
    } else if (TimestampDifferenceExceeds(last_progress, now, kStallTimeoutMs)) {
      ConditionVariableCancelSleep();
      ereport(
          ERROR,
          (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
           errmsg("the rate_limiter %s was not flushed within %ld ms", what, kStallTimeoutMs),
           errdetail("The \"rate_limiter flusher\" background worker of this database made no "
                     "progress."),
           errhint("Check that it runs (pg_stat_activity), that max_worker_processes leaves it a "
                   "slot, and the server log%s",
                   hint)));
    }
  }
  ConditionVariableCancelSleep();
}

}  // namespace rate_limiter::pg
