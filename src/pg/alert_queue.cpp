#include "rate_limiter/pg/alert_queue.hpp"

#include <cstddef>
#include <type_traits>

#include "rate_limiter/pg/metrics.hpp"
#include "rate_limiter/pg/settings.hpp"
#include "rate_limiter/pg/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter alert queue";
constexpr const char* kTrancheName = "rate_limiter_alert_queue";

// wait_for_alert_flush(): re-check (and re-wake the flusher) this often, and
// give up on a flusher that makes no progress after this long; the same
// values as the usage queue's wait.
constexpr long kAlertFlushPollMs = 100;
constexpr long kAlertFlushStallTimeoutMs = 30000;

// Shared memory holds only trivially copyable types.
static_assert(std::is_trivially_copyable_v<AlertRecord>);

struct AlertQueue {
  uint64 capacity;  // slots
  uint64 head;      // records ever appended
  uint64 tail;      // records ever written; only the flusher moves it
  ConditionVariable progress;
  AlertRecord slots[FLEXIBLE_ARRAY_MEMBER];
};

AlertQueue* queue = nullptr;
LWLock* queue_lock = nullptr;

Size queue_bytes() {
  return add_size(offsetof(AlertQueue, slots),
                  mul_size(static_cast<Size>(settings.alert_queue_size), sizeof(AlertRecord)));
}

}  // namespace

void request_alert_queue_memory() {
  RequestAddinShmemSpace(queue_bytes());
  RequestNamedLWLockTranche(kTrancheName, 1);
}

void attach_alert_queue_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  queue = static_cast<AlertQueue*>(ShmemInitStruct(kSegmentName, queue_bytes(), &found));
  queue_lock = &GetNamedLWLockTranche(kTrancheName)[0].lock;
  if (!found) {
    queue->capacity = static_cast<uint64>(settings.alert_queue_size);
    queue->head = 0;
    queue->tail = 0;
    ConditionVariableInit(&queue->progress);
  }
  LWLockRelease(AddinShmemInitLock);
}

void alert_queue_push(const AlertRecord& record) noexcept {
  if (queue == nullptr) return;
  LWLockAcquire(queue_lock, LW_EXCLUSIVE);
  const bool fits = queue->head - queue->tail < queue->capacity;
  if (fits) {
    memcpy(&queue->slots[queue->head % queue->capacity], &record, sizeof record);
    queue->head += 1;
  }
  LWLockRelease(queue_lock);
  metric_add(fits ? &shared->metrics.alerts_queued : &shared->metrics.alerts_dropped);
}

void wait_for_alert_flush() {
  AlertWindow w = alert_queue_window();
  const uint64 target = w.head;
  if (w.tail >= target) return;
  uint64 last_tail = w.tail;
  TimestampTz last_progress = GetCurrentTimestamp();
  ConditionVariablePrepareToSleep(&queue->progress);
  for (;;) {
    usage_queue_wake_flusher();
    ConditionVariableTimedSleep(&queue->progress, kAlertFlushPollMs, PG_WAIT_EXTENSION);
    w = alert_queue_window();
    if (w.tail >= target) break;
    const TimestampTz now = GetCurrentTimestamp();
    if (w.tail != last_tail) {
      last_tail = w.tail;
      last_progress = now;
    } else if (TimestampDifferenceExceeds(last_progress, now, kAlertFlushStallTimeoutMs)) {
      ConditionVariableCancelSleep();
      ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                      errmsg("the rate_limiter alert queue was not flushed within %ld ms",
                             kAlertFlushStallTimeoutMs),
                      errdetail("The \"rate_limiter flusher\" background worker made no progress."),
                      errhint("Check that it runs (pg_stat_activity) and the server log.")));
    }
  }
  ConditionVariableCancelSleep();
}

AlertWindow alert_queue_window() {
  LWLockAcquire(queue_lock, LW_SHARED);
  AlertWindow w{queue->tail, queue->head};
  LWLockRelease(queue_lock);
  return w;
}

void alert_queue_read(uint64 position, AlertRecord* out) {
  memcpy(out, &queue->slots[position % queue->capacity], sizeof *out);
}

void alert_queue_consume(uint64 records) {
  LWLockAcquire(queue_lock, LW_EXCLUSIVE);
  queue->tail += records;
  LWLockRelease(queue_lock);
  ConditionVariableBroadcast(&queue->progress);
}

}  // namespace rate_limiter::pg
