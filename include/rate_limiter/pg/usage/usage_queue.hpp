// The usage queue: token_usage rows on their way to the table, in shared
// memory (segment "rate_limiter usage queue", rate_limiter.usage_queue_size).
//
// One stream per installation slot (the slot's index), carved from one
// pool of 8 kB chunks (stream_pool.hpp): each database's worker
// (database_worker.hpp) drains its own stream, and one database may hold at
// most rate_limiter.database_queue_share of the pool, so a database whose
// worker is behind, stuck or not running fills only its share.  A record
// is an EncodedHeader followed by the user_id, api_endpoint and session_id
// bytes, and then by an optional trailer: the granted_to role (an Oid) and
// the charges bytes (the rest of the record).  A record without a trailer
// (saved by a version before 1.3) has neither.
//
// Producers are backends (usage_log.cpp, usage_pending.cpp).  The only
// consumer of a stream is its database's worker: it reads the records of
// [tail, head) without removing them, inserts them into token_usage, and
// only after its commit consumes them.  An event is therefore queued until
// its row is committed; a failed flush leaves it for the next try.
//
// Room for events appended later, at commit (refund_on_abort calls,
// usage_pending.hpp), is reserved as whole chunks: the commit callback must
// not fail, so it must never find the queue full.  Reservations are held
// until their transaction ends, so they are capped: one transaction at
// rate_limiter.transaction_queue_share of its database's share, all of a
// stream's together at half of it (StreamPool::reserve_chunk()).  A
// transaction past its cap writes its rows itself.
//
// Locking: see stream_pool.hpp (one LWLock per stream, tranche
// "rate_limiter_usage_queue").  Producers waiting for room sleep on the
// pool's `space` condition variable; callers of wait_for_usage_flush() on
// their stream's `progress`.
#pragma once

#include "rate_limiter/pg/shmem.hpp"

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

struct InstallationSlot;

constexpr int kNoPriority = -1;

// One usage event, decoded: pointers into the caller's or the record's bytes.
struct UsageEvent {
  int64 id = 0;  // token_usage.id; 0: the worker draws it from the sequence
  int64 tokens = 0;
  TimestampTz at = 0;  // the decision's time, the row's "timestamp"
  TimestampTz enqueued_at = 0;
  Oid database = InvalidOid;  // the installation the row belongs to
  Oid extension = InvalidOid;
  int priority = kNoPriority;  // core::Priority, or kNoPriority for a counted check
  const char* user = nullptr;
  int user_len = 0;
  const char* endpoint = nullptr;  // nullptr: NULL
  int endpoint_len = 0;
  const char* session = nullptr;  // nullptr: NULL
  int session_len = 0;
  // Version 1.3 columns.  granted_to: the role that called (InvalidOid:
  // NULL); charges: the grant's token charges (grant_charges.hpp),
  // nullptr: NULL.
  Oid granted_to = InvalidOid;
  const char* charges = nullptr;
  int charges_len = 0;
};

// Fixed part of every record.  Trivially copyable; copied with memcpy, so
// records need no alignment in the chunks.
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
constexpr uint32 kMaxEncodedEventBytes =
    sizeof(EncodedHeader) + 3 * core::kMaxIdBytes + sizeof(Oid) + kMaxGrantChargesBytes;

// Writes `event` into `out` (at least kMaxEncodedEventBytes); returns its
// length.  Sets enqueued_at to now.
uint32 encode_usage_event(const UsageEvent& event, char* out);
// `bytes` must hold one whole record; the result points into it.
UsageEvent decode_usage_event(const char* bytes);

SegmentRequest usage_queue_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_usage_queue_memory();      // from attach_shared_memory()

// The stream of an installation: its registry slot's index.
int usage_stream_of(const InstallationSlot* slot) noexcept;

// Producer side.  Counts a wait in usage_queue_full_waits when the
// stream is at its share (or the pool is empty) at first try, wakes its
// worker, and waits up to wait_ms (interruptible).  False: still no room.
bool usage_queue_append(int stream, const char* record, uint32 length, int wait_ms);
// One more reserved chunk (usage_pending.hpp) for a transaction that
// holds `held` of them, waiting like usage_queue_append when the stream is
// full; kNoChunk when there is none.  *capped: refused at once, without a
// wait, because the transaction holds transaction_reservation_cap() chunks
// or the stream's reservations hold half its share.
int32 usage_queue_reserve_chunk(int stream, uint32 held, int wait_ms, bool* capped);
// The most chunks one transaction may hold reserved:
// rate_limiter.transaction_queue_share of a database's share, at least one.
uint32 transaction_reservation_cap() noexcept;

// Waits until every event appended to `stream` before the call is in
// token_usage (committed by the worker).  Raises 55000 when the worker
// makes no progress for a while (queue_drain.hpp).
void wait_for_usage_flush(int stream);

// The pool itself: the worker's consumer side and usage_pending's
// reservations use it directly.
StreamPool& usage_queue_pool() noexcept;
// Sets the latch of the stream's worker, if one runs.
void usage_queue_wake_consumer(int stream) noexcept;

// Age of the stream's oldest queued event; 0 when it is empty.
int64 usage_queue_lag_ms(int stream) noexcept;

struct UsageQueueStats {
  uint64 events;  // queued, every database
  uint64 bytes;   // chunks in use (queued or reserved)
  uint64 capacity;
  int64 lag_ms;  // age of the oldest queued event of any database; 0 when empty
};
UsageQueueStats usage_queue_stats();

}  // namespace rate_limiter::pg
