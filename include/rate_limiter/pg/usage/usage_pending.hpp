// Usage events of refund_on_abort calls in async mode: the Usage entries of
// the transaction-effects log (support/transaction_log.hpp).
//
// Such a call's charge is refunded if its transaction (or the savepoint it
// ran in) rolls back, so its row must not appear then.  The event stays in
// backend memory (TopTransactionContext), with the subtransaction that made
// it, and goes to its database's queue stream only at XACT_EVENT_COMMIT (or
// PREPARE, whose charges are kept).  Not at PRE_COMMIT: the commit can
// still fail after it (a serialization failure), and the row of an aborted
// call would be flushed anyway.  Appending in the COMMIT callback cannot
// fail because whole chunks were reserved when the events were made
// (usage_queue_reserve_chunk(), as many as next-fit packing of the pending
// events needs); abort gives them all back, and ROLLBACK TO SAVEPOINT gives
// back those the remaining events no longer need.
//
// One transaction may reserve at most rate_limiter.transaction_queue_share
// of its database's share of the queue (StreamPool::reserve_chunk()): past
// that its events are written synchronously, in the transaction, without
// waiting, so that one open transaction cannot starve the other sessions.
//
// Written early.  settle_tokens and rate_limiter_flush_usage() insert the
// pending rows in the current subtransaction (materialize_pending_usage()),
// which may be a savepoint taken after the calls.  The events are kept,
// marked with that subtransaction, and their chunks stay reserved: if that
// subtransaction rolls back while the calls' own survive (the rows go, the
// charges stay), the events are pending again and are queued at commit.
// A charge and its row therefore live or die together on every path.
#pragma once

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

void register_pending_usage_callbacks();  // once, from _PG_init: the Usage handlers

// Reserves room in `stream` (waiting up to wait_ms when the stream is
// full) and keeps the event until commit.  False: no room, the
// transaction's reservation cap is reached (*capped), or the transaction
// already holds events of another stream; the caller writes the row
// synchronously instead (it then follows the transaction as well).
bool defer_usage_event(int stream, const char* record, uint32 length, int wait_ms, bool* capped);

// Inserts this transaction's pending events now, in the current
// (sub)transaction: used before looking a row up (settle_tokens,
// rate_limiter_flush()).  See "Written early" above.
void materialize_pending_usage();

}  // namespace rate_limiter::pg
