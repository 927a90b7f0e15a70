// The alert queue: alert records on their way to rate_limit_alerts, in
// shared memory (segment "rate_limiter alert queue", about
// rate_limiter.alert_queue_size records).
//
// Alerts are best effort.  The hot path must neither run SQL nor block to
// raise one, so a backend copies a fixed-size AlertRecord into its
// database's stream and goes on; when the stream is at its share
// (rate_limiter.database_queue_share) or the pool is empty, the record is
// dropped and counted in alerts_dropped (the decision itself is never
// affected).  Records of a server crash are lost with the shared memory.
//
// Storage works like the usage queue's (stream_pool.hpp): one stream per
// installation slot, chunks of kAlertsPerChunk records from one pool.
// Producers are backends (alerts.cpp) and the database's worker itself
// (flush lag); the only consumer of a stream is its database's worker
// (alert_flush.cpp), which reads [tail, head) WITHOUT the lock, inserts the
// rows, and consumes them after its commit.
//
// Locking: one LWLock per stream (tranche "rate_limiter_alert_queue");
// producers hold it only to check for room and memcpy one record, so
// pushing is safe anywhere outside a partition lock.  The stream's
// `progress` condition variable is broadcast when its tail advances
// (wait_for_alert_flush()).
#pragma once

#include "rate_limiter/pg/shmem.hpp"

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// Hashed into nothing, but stored in queued records only: renumbering is
// harmless across restarts (the queue does not survive them).
enum class AlertKind : uint8 {
  QuotaThreshold,     // a charge crossed one of rate_limiter.alert_thresholds
  Abuse,              // more than abuse_denials denials of one user in abuse_window
  EmergencyOverride,  // an allocation took the emergency path
  TableFull,          // the counter table was full (RL507 or fail_open_table_full)
  FailOpen,           // a call was allowed without (full) enforcement (failure_mode = open)
  FlushLag,           // the usage flush is behind by more than alert_flush_lag
  TableFilling,       // the counter table passed rate_limiter.alert_table_fill percent
  DeadLetter,         // the worker set usage rows aside that token_usage refused
};

constexpr int16 kNullId = -1;  // user_len / endpoint_len of a NULL id
constexpr uint8 kNoScope = 0xff;

// One alert.  Trivially copyable, fixed size: a slot of the ring.
struct AlertRecord {
  AlertKind kind;
  uint8 scope;       // core::ScopeKind, or kNoScope
  uint8 limit_kind;  // 0 tokens, 1 requests, 2 token_burst, 3 request_burst; kNoScope: none
  uint8 reserved;
  int16 user_len;      // kNullId: NULL
  int16 endpoint_len;  // kNullId: NULL
  int32 threshold;     // percent (QuotaThreshold, Abuse: the denial count), 0: none
  int64 limit;         // capacity of the limit; -1: none
  int64 used;          // usage after the call; -1: none
  int64 window_start;  // us since the Unix epoch: the dedup window
  int64 at;            // us since the Unix epoch: the decision's time
  Oid database;        // the installation the alert belongs to
  Oid extension;
  char user[core::kMaxIdBytes];
  char endpoint[core::kMaxIdBytes];
};

SegmentRequest alert_queue_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_alert_queue_memory();      // from attach_shared_memory()

// Appends one record to `stream` (the installation's slot index) or, when
// there is no room, drops it and counts it in alerts_dropped.  Never blocks
// (beyond the short LWLock), never ereports.  Must not be called with a
// partition lock held (lock order: partition locks are never held while
// another LWLock is taken by this module).
void alert_queue_push(int stream, const AlertRecord& record) noexcept;

// Waits until every record pushed to `stream` before the call is written
// (committed by the worker).  Raises 55000 when the worker makes no
// progress for a while (queue_drain.hpp).
void wait_for_alert_flush(int stream);

// The consumer side (the database's worker).
StreamPool& alert_queue_pool() noexcept;

}  // namespace rate_limiter::pg
