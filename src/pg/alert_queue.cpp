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
  wait_for_queue_drain(&queue->progress, alert_queue_window, "alert queue", ".");
}

QueueWindow alert_queue_window() {
  LWLockAcquire(queue_lock, LW_SHARED);
  QueueWindow w{queue->tail, queue->head};
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
