#include "rate_limiter/pg/usage/usage_queue.hpp"

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage/queue_drain.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter usage queue";
constexpr const char* kTrancheName = "rate_limiter_usage_queue";
// A chunk holds one of the largest records (kMaxEncodedEventBytes, about
// 6 kB: a grant that charged every level of a deep hierarchy with long
// ids) and about a hundred typical ones (60 to 100 bytes).
constexpr uint32 kChunkBytes = 8192;
static_assert(kMaxEncodedEventBytes + kRecordLengthBytes <= kChunkBytes);

StreamPool pool;

uint32 chunk_count() {
  const uint64 bytes = static_cast<uint64>(settings.usage_queue_size_kb) * 1024;
  return static_cast<uint32>(Max(bytes / kChunkBytes, static_cast<uint64>(8)));
}

// Tries `claim` (true: done) and, when it fails, counts the wait, wakes the
// stream's worker and sleeps on the pool's `space` until it succeeds or
// wait_ms have passed.  Interruptible; no lock is held while sleeping.
// `refused()` true after a failed claim: no room will come by waiting (a
// reservation cap), give up at once.
template <typename Claim, typename Refused>
bool claim_waiting(int stream, int wait_ms, Claim claim, Refused refused) {
  if (claim()) return true;
  if (refused()) return false;
  metric_add(&shared->metrics.usage_queue_full_waits);
  usage_queue_wake_consumer(stream);
  if (wait_ms <= 0) return false;
  const TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
  bool done = false;
  ConditionVariablePrepareToSleep(pool.space());
  for (;;) {
    if (claim()) {
      done = true;
      break;
    }
    if (refused()) break;
    const long remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
    if (remaining <= 0) break;
    ConditionVariableTimedSleep(pool.space(), remaining, PG_WAIT_EXTENSION);
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
  if (OidIsValid(e.granted_to) || e.charges != nullptr) {
    memcpy(p, &e.granted_to, sizeof(Oid));
    p += sizeof(Oid);
    if (e.charges != nullptr) {
      memcpy(p, e.charges, e.charges_len);
      p += e.charges_len;
    }
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
    p += h.session_len;
  }
  const uint32 used = static_cast<uint32>(p - bytes);
  if (h.length >= used + sizeof(Oid)) {
    memcpy(&e.granted_to, p, sizeof(Oid));
    p += sizeof(Oid);
    const uint32 rest = h.length - used - static_cast<uint32>(sizeof(Oid));
    if (rest > 0) {
      e.charges = p;
      e.charges_len = static_cast<int>(rest);
    }
  }
  return e;
}

SegmentRequest usage_queue_segment() {
  return StreamPool::segment(kSegmentName, kTrancheName,
                             static_cast<uint32>(configured_installation_slots()), chunk_count(),
                             kChunkBytes);
}

void attach_usage_queue_memory() {
  pool.attach(kSegmentName, kTrancheName, static_cast<uint32>(configured_installation_slots()),
              chunk_count(), kChunkBytes);
}

int usage_stream_of(const InstallationSlot* slot) noexcept { return installation_index(slot); }

bool usage_queue_append(int stream, const char* record, uint32 length, int wait_ms) {
  return claim_waiting(
      stream, wait_ms,
      [&] {
        Latch* wake = nullptr;
        const bool done = pool.append(stream, record, length, &wake);
        if (wake != nullptr) SetLatch(wake);
        return done;
      },
      [] { return false; });
}

uint32 transaction_reservation_cap() noexcept {
  return Max(1u, static_cast<uint32>(settings.transaction_queue_share * pool.stream_cap()));
}

int32 usage_queue_reserve_chunk(int stream, uint32 held, int wait_ms, bool* capped) {
  int32 chunk = kNoChunk;
  const uint32 cap = transaction_reservation_cap();
  *capped = false;
  claim_waiting(
      stream, wait_ms,
      [&] {
        chunk = pool.reserve_chunk(stream, held, cap, capped);
        return chunk != kNoChunk;
      },
      [&] { return *capped; });
  return chunk;
}

void wait_for_usage_flush(int stream) {
  wait_for_queue_drain(pool, stream, "usage queue",
                       "; it cannot insert while this transaction holds a conflicting lock on "
                       "token_usage.");
}

StreamPool& usage_queue_pool() noexcept { return pool; }

void usage_queue_wake_consumer(int stream) noexcept {
  if (Latch* latch = pool.consumer_latch(stream)) SetLatch(latch);
}

int64 usage_queue_lag_ms(int stream) noexcept {
  EncodedHeader oldest;
  if (!pool.peek_oldest(stream, reinterpret_cast<char*>(&oldest), sizeof oldest)) return 0;
  return TimestampDifferenceMilliseconds(oldest.enqueued_at, GetCurrentTimestamp());
}

UsageQueueStats usage_queue_stats() {
  const StreamTotals t = pool.totals();
  UsageQueueStats s;
  s.events = t.records;
  s.bytes = t.chunks_in_use * t.chunk_bytes;
  s.capacity = t.chunks * t.chunk_bytes;
  s.lag_ms = 0;
  for (uint32 i = 0; i < pool.streams(); ++i)
    s.lag_ms = Max(s.lag_ms, usage_queue_lag_ms(static_cast<int>(i)));
  return s;
}

}  // namespace rate_limiter::pg
