#include "rate_limiter/pg/queue_drain.hpp"

#include "rate_limiter/pg/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

// How often a waiter re-checks (and re-wakes the flusher), and how long it
// tolerates a flusher that makes no progress before it raises an error
// instead of waiting forever.
constexpr long kPollMs = 100;
constexpr long kStallTimeoutMs = 30000;

}  // namespace

void wait_for_queue_drain(ConditionVariable* progress, QueueWindow (*read_window)(), const char* what,
                          const char* hint) {
  QueueWindow w = read_window();
  const uint64 target = w.head;
  if (w.tail >= target) return;
  uint64 last_tail = w.tail;
  TimestampTz last_progress = GetCurrentTimestamp();
  ConditionVariablePrepareToSleep(progress);
  for (;;) {
    usage_queue_wake_flusher();
    ConditionVariableTimedSleep(progress, kPollMs, PG_WAIT_EXTENSION);
    w = read_window();
    if (w.tail >= target) break;
    const TimestampTz now = GetCurrentTimestamp();
    if (w.tail != last_tail) {
      last_tail = w.tail;
      last_progress = now;
    } else if (TimestampDifferenceExceeds(last_progress, now, kStallTimeoutMs)) {
      ConditionVariableCancelSleep();
      ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                      errmsg("the rate_limiter %s was not flushed within %ld ms", what, kStallTimeoutMs),
                      errdetail("The \"rate_limiter flusher\" background worker made no progress."),
                      errhint("Check that it runs (pg_stat_activity) and the server log%s", hint)));
    }
  }
  ConditionVariableCancelSleep();
}

}  // namespace rate_limiter::pg
