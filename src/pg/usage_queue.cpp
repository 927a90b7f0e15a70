#include "rate_limiter/pg/usage_queue.hpp"

#include "rate_limiter/pg/queue_drain.hpp"

#include <cstddef>

#include "rate_limiter/pg/metrics.hpp"
#include "rate_limiter/pg/settings.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter usage queue";
constexpr const char* kTrancheName = "rate_limiter_usage_queue";

struct UsageQueue {
  uint64 capacity;        // ring bytes
  uint64 head;            // bytes ever appended
  uint64 tail;            // bytes ever flushed; only the flusher moves it
  uint64 reserved;        // bytes promised to pending transactions
  uint64 events;          // records in [tail, head)
  Latch* flusher_latch;   // nullptr while no flusher runs
  ConditionVariable progress;
  char ring[FLEXIBLE_ARRAY_MEMBER];
};

UsageQueue* queue = nullptr;
LWLock* queue_lock = nullptr;

Size queue_bytes() {
  return add_size(offsetof(UsageQueue, ring),
                  mul_size(static_cast<Size>(settings.usage_queue_size_kb), 1024));
}

// Ring copies; the caller owns [position, position + length).
void copy_in(uint64 position, const char* from, uint32 length) {
  const uint64 offset = position % queue->capacity;
  const uint64 first = Min(static_cast<uint64>(length), queue->capacity - offset);
  memcpy(queue->ring + offset, from, first);
  if (first < length) memcpy(queue->ring, from + first, length - first);
}

void copy_out(uint64 position, char* to, uint32 length) {
  const uint64 offset = position % queue->capacity;
  const uint64 first = Min(static_cast<uint64>(length), queue->capacity - offset);
  memcpy(to, queue->ring + offset, first);
  if (first < length) memcpy(to + first, queue->ring, length - first);
}

uint64 used_bytes() { return queue->head - queue->tail + queue->reserved; }

enum class Claim { Append, Reserve };

// One try, under the lock: append (or reserve room for) one record.
bool try_claim(Claim claim, const char* record, uint32 length) {
  LWLockAcquire(queue_lock, LW_EXCLUSIVE);
  const bool fits = used_bytes() + length <= queue->capacity;
  if (fits) {
    if (claim == Claim::Append) {
      copy_in(queue->head, record, length);
      queue->head += length;
      queue->events += 1;
    } else {
      queue->reserved += length;
    }
  }
  // Past half full the flusher should not wait for its next interval.
  Latch* wake = used_bytes() * 2 > queue->capacity ? queue->flusher_latch : nullptr;
  LWLockRelease(queue_lock);
  if (wake != nullptr) SetLatch(wake);
  return fits;
}

void wake_flusher() {
  LWLockAcquire(queue_lock, LW_SHARED);
  Latch* latch = queue->flusher_latch;
  LWLockRelease(queue_lock);
  if (latch != nullptr) SetLatch(latch);
}

bool claim_waiting(Claim claim, const char* record, uint32 length, int wait_ms) {
  if (try_claim(claim, record, length)) return true;
  metric_add(&shared->metrics.usage_queue_full_waits);
  wake_flusher();
  if (wait_ms <= 0) return false;
  const TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
  bool done = false;
  ConditionVariablePrepareToSleep(&queue->progress);
  for (;;) {
    if (try_claim(claim, record, length)) {
      done = true;
      break;
    }
    const long remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
    if (remaining <= 0) break;
    // Interruptible (CHECK_FOR_INTERRUPTS inside); no lock is held here.
    ConditionVariableTimedSleep(&queue->progress, remaining, PG_WAIT_EXTENSION);
  }
  ConditionVariableCancelSleep();
  return done;
}

}  // namespace

uint32 encode_usage_event(const UsageEvent& e, char* out) {
  EncodedHeader h;
  memset(&h, 0, sizeof h);
  h.user_len = static_cast<int16>(e.user_len);
  h.endpoint_len = static_cast<int16>(e.endpoint != nullptr ? e.endpoint_len : -1);
  h.session_len = static_cast<int16>(e.session != nullptr ? e.session_len : -1);
  h.priority = static_cast<int16>(e.priority);
  h.id = e.id;
  h.tokens = e.tokens;
  h.at = e.at;
  h.enqueued_at = GetCurrentTimestamp();
  h.database = e.database;
  h.extension = e.extension;
  char* p = out + sizeof h;
  memcpy(p, e.user, e.user_len);
  p += e.user_len;
  if (e.endpoint != nullptr) {
    memcpy(p, e.endpoint, e.endpoint_len);
    p += e.endpoint_len;
  }
  if (e.session != nullptr) {
    memcpy(p, e.session, e.session_len);
    p += e.session_len;
  }
  h.length = static_cast<uint32>(p - out);
  memcpy(out, &h, sizeof h);
  return h.length;
}

UsageEvent decode_usage_event(const char* bytes) {
  EncodedHeader h;
  memcpy(&h, bytes, sizeof h);
  UsageEvent e;
  e.id = h.id;
  e.tokens = h.tokens;
  e.at = h.at;
  e.enqueued_at = h.enqueued_at;
  e.database = h.database;
  e.extension = h.extension;
  e.priority = h.priority;
  const char* p = bytes + sizeof h;
  e.user = p;
  e.user_len = h.user_len;
  p += h.user_len;
  if (h.endpoint_len >= 0) {
    e.endpoint = p;
    e.endpoint_len = h.endpoint_len;
    p += h.endpoint_len;
  }
  if (h.session_len >= 0) {
    e.session = p;
    e.session_len = h.session_len;
  }
  return e;
}

void request_usage_queue_memory() {
  RequestAddinShmemSpace(queue_bytes());
  RequestNamedLWLockTranche(kTrancheName, 1);
}

void attach_usage_queue_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  queue = static_cast<UsageQueue*>(ShmemInitStruct(kSegmentName, queue_bytes(), &found));
  queue_lock = &GetNamedLWLockTranche(kTrancheName)[0].lock;
  if (!found) {
    queue->capacity = static_cast<uint64>(settings.usage_queue_size_kb) * 1024;
    queue->head = 0;
    queue->tail = 0;
    queue->reserved = 0;
    queue->events = 0;
    queue->flusher_latch = nullptr;
    ConditionVariableInit(&queue->progress);
  }
  LWLockRelease(AddinShmemInitLock);
}

bool usage_queue_append(const char* record, uint32 length, int wait_ms) {
  return claim_waiting(Claim::Append, record, length, wait_ms);
}

bool usage_queue_reserve(uint32 length, int wait_ms) {
  return claim_waiting(Claim::Reserve, nullptr, length, wait_ms);
}

void usage_queue_append_reserved(const char* record, uint32 length) noexcept {
  LWLockAcquire(queue_lock, LW_EXCLUSIVE);
  // The reservation guarantees the room: used_bytes() does not change.
  copy_in(queue->head, record, length);
  queue->head += length;
  queue->events += 1;
  queue->reserved -= length;
  Latch* wake = used_bytes() * 2 > queue->capacity ? queue->flusher_latch : nullptr;
  LWLockRelease(queue_lock);
  if (wake != nullptr) SetLatch(wake);
}

void usage_queue_release(uint64 length) noexcept {
  if (length == 0) return;
  LWLockAcquire(queue_lock, LW_EXCLUSIVE);
  queue->reserved -= length;
  LWLockRelease(queue_lock);
  ConditionVariableBroadcast(&queue->progress);
}

void wait_for_usage_flush() {
  wait_for_queue_drain(&queue->progress, usage_queue_window, "usage queue",
                       "; it cannot insert while this transaction holds a conflicting lock on "
                       "token_usage.");
}

QueueWindow usage_queue_window() {
  LWLockAcquire(queue_lock, LW_SHARED);
  QueueWindow w{queue->tail, queue->head};
  LWLockRelease(queue_lock);
  return w;
}

uint32 usage_queue_read(uint64 position, char* out) {
  EncodedHeader h;
  copy_out(position, reinterpret_cast<char*>(&h), sizeof h);
  copy_out(position, out, h.length);
  return h.length;
}

void usage_queue_consume(uint64 bytes, uint64 events) {
  LWLockAcquire(queue_lock, LW_EXCLUSIVE);
  queue->tail += bytes;
  queue->events -= events;
  LWLockRelease(queue_lock);
  ConditionVariableBroadcast(&queue->progress);
}

void usage_queue_wake_flusher() { wake_flusher(); }

void usage_queue_attach_flusher(Latch* latch) {
  LWLockAcquire(queue_lock, LW_EXCLUSIVE);
  queue->flusher_latch = latch;
  LWLockRelease(queue_lock);
}

UsageQueueStats usage_queue_stats() {
  UsageQueueStats s;
  EncodedHeader oldest;
  LWLockAcquire(queue_lock, LW_SHARED);
  s.events = queue->events;
  s.bytes = used_bytes();
  s.capacity = queue->capacity;
  const bool empty = queue->head == queue->tail;
  if (!empty) copy_out(queue->tail, reinterpret_cast<char*>(&oldest), sizeof oldest);
  LWLockRelease(queue_lock);
  s.lag_ms = empty ? 0 : TimestampDifferenceMilliseconds(oldest.enqueued_at, GetCurrentTimestamp());
  return s;
}

}  // namespace rate_limiter::pg
