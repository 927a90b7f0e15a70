// The usage queue: token_usage rows on their way to the table, in shared
// memory (segment "rate_limiter usage queue", rate_limiter.usage_queue_size).
//
// A byte ring of variable-length records (an EncodedHeader, then the
// user_id, api_endpoint and session_id bytes).  Positions are byte counts
// since the server started, so they only grow: head (bytes ever appended),
// tail (bytes ever flushed), and the ring offset is position % capacity.
//
// Producers are backends (usage_log.cpp).  The only consumer is the
// flusher (flush_worker.cpp): it copies records out of [tail, head) without
// removing them, inserts them into token_usage, and only after its commit
// advances tail.  An event is therefore in the queue until its row is
// committed; a failed flush leaves it there for the next try.
//
// Locking
//  - One LWLock (tranche "rate_limiter_usage_queue") guards head, tail,
//    reserved, events and flusher_latch.  Producers hold it exclusively
//    while they check for space and memcpy one record; nothing else happens
//    under it (no ereport, no allocation).
//  - The flusher reads the bytes of [tail, head) WITHOUT the lock: producers
//    never write there (free space excludes it) and only the flusher moves
//    tail.
//  - Space can be reserved for events that are appended later, at commit
//    (refund_on_abort calls, usage_pending.hpp): the commit callback must
//    not fail, so it must never find the queue full.
//  - The condition variable `progress` is broadcast whenever tail advances
//    or a reservation is released: producers waiting for space and callers
//    of wait_for_usage_flush() sleep on it.
#pragma once

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/postgres.hpp"
#include "rate_limiter/pg/queue_drain.hpp"

namespace rate_limiter::pg {

constexpr int kNoPriority = -1;

// One usage event, decoded: pointers into the caller's or the record's bytes.
struct UsageEvent {
  int64 id = 0;            // token_usage.id; 0: the flusher draws it from the sequence
  int64 tokens = 0;
  TimestampTz at = 0;      // the decision's time, the row's "timestamp"
  TimestampTz enqueued_at = 0;
  Oid database = InvalidOid;   // the installation the row belongs to
  Oid extension = InvalidOid;
  int priority = kNoPriority;  // core::Priority, or kNoPriority for a counted check
  const char* user = nullptr;
  int user_len = 0;
  const char* endpoint = nullptr;  // nullptr: NULL
  int endpoint_len = 0;
  const char* session = nullptr;   // nullptr: NULL
  int session_len = 0;
};

// Fixed part of every record.  Trivially copyable; copied with memcpy, so
// records need no alignment in the ring.
struct EncodedHeader {
  uint32 length;  // the whole record
  int16 user_len;
  int16 endpoint_len;  // -1: NULL
  int16 session_len;   // -1: NULL
  int16 priority;      // kNoPriority or core::Priority
  int64 id;
  int64 tokens;
  TimestampTz at;
  TimestampTz enqueued_at;
  Oid database;
  Oid extension;
};

// Ids are at most core::kMaxIdBytes long (validated by arguments.cpp).
constexpr uint32 kMaxEncodedEventBytes = sizeof(EncodedHeader) + 3 * core::kMaxIdBytes;

// Writes `event` into `out` (at least kMaxEncodedEventBytes); returns its
// length.  Sets enqueued_at to now.
uint32 encode_usage_event(const UsageEvent& event, char* out);
// `bytes` must hold one whole record; the result points into it.
UsageEvent decode_usage_event(const char* bytes);

void request_usage_queue_memory();  // from request_shared_memory()
void attach_usage_queue_memory();   // from attach_shared_memory()

// Producer side.  Both count a wait in usage_queue_full_waits when the
// queue is full at first try, wake the flusher, and wait up to wait_ms
// (interruptible).  False: still no room.
bool usage_queue_append(const char* record, uint32 length, int wait_ms);
bool usage_queue_reserve(uint32 length, int wait_ms);
// Transaction callbacks: no ereport, only the lock and memcpy.
void usage_queue_append_reserved(const char* record, uint32 length) noexcept;
void usage_queue_release(uint64 length) noexcept;

// Waits until every event appended before the call is in token_usage
// (committed by the flusher).  Raises 55000 when the flusher makes no
// progress for a while (queue_drain.hpp).
void wait_for_usage_flush();

// Consumer side (the flusher only).
QueueWindow usage_queue_window();
// Copies the record at `position` (inside the window) into out
// (kMaxEncodedEventBytes); returns its length.
uint32 usage_queue_read(uint64 position, char* out);
// After the commit that inserted them: frees `bytes` (= `events` records).
void usage_queue_consume(uint64 bytes, uint64 events);
void usage_queue_attach_flusher(Latch* latch);  // nullptr on exit
// Sets the flusher's latch, if one runs (also for the alert queue).
void usage_queue_wake_flusher();

struct UsageQueueStats {
  uint64 events;
  uint64 bytes;     // queued and reserved
  uint64 capacity;
  int64 lag_ms;     // age of the oldest queued event; 0 when empty
};
UsageQueueStats usage_queue_stats();

}  // namespace rate_limiter::pg
