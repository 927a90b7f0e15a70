// Writing token_usage rows: one per grant of allocate_tokens and per request
// counted by check_rate_limit/enforce_rate_limit.
//
// rate_limiter.usage_log chooses how:
//   sync   INSERT ... RETURNING id in the caller's transaction, through a
//          saved SPI plan that runs as the extension owner.  The row follows
//          the caller's transaction, and so does the charge (below).
//   async  the event goes to the installation's stream of the shared usage
//          queue (usage_queue.hpp) and the database's worker
//          (database_worker.hpp) inserts it shortly after.  A grant's id
//          (allocation_id) is drawn from token_usage_id_seq at once.  The
//          row does NOT follow the caller's transaction, because the charge
//          does not either; except for refund_on_abort calls, whose events
//          wait in the backend until commit (usage_pending.hpp).  Only in a
//          database that can have a worker (database_served()); elsewhere
//          sync.  A served database whose worker is not running yet still
//          queues: the worker drains the stream when it comes.  When the
//          stream stays full for queue_full_wait, or a refund_on_abort
//          transaction passed its reservation cap, the event is written as
//          in sync mode: never dropped.
//   off    no row; allocation_id is NULL.
// Each row carries the decision's timestamp, so the window it belongs to is
// exact.
//
// A charge and its row share one fate.  A row written in the caller's
// transaction (sync mode, or a row that could not be queued) rolls back
// with it, so before such a write the call's charge is made to follow the
// transaction too (UsageRow::follow_transaction: refunded at abort and at
// ROLLBACK TO SAVEPOINT, as refund_on_abort does).  A row queued at once
// outlives any rollback, and so does its charge.  For the same reason a
// transaction that wrote usage rows itself cannot be prepared: until
// COMMIT PREPARED they would be invisible to everyone, the counter rebuild
// after a crash included (XACT_EVENT_PRE_PREPARE raises 0A000).
#pragma once

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage/usage_queue.hpp"

namespace rate_limiter::pg {

struct UsageRow {
  const IdArg* user;
  const IdArg* endpoint;  // may be absent
  const IdArg* session;   // may be absent
  int64 tokens;           // 0 for a check_rate_limit request
  int priority;           // core::Priority, or kNoPriority for a check_rate_limit request
  TimestampTz at;
  // Called once, just before the row is written in the caller's
  // transaction, when the call's charge does not follow the transaction
  // yet (no refund_on_abort): makes it follow.  May allocate or ereport.
  void (*follow_transaction)(void* context) = nullptr;
  void* follow_context = nullptr;
  // Called with a grant's row id (follow_context) before any other session
  // can read the row: in async mode before it is queued, in sync mode right
  // after the insert (visible at commit).  Must not fail.
  void (*id_known)(void* context, int64 id) noexcept = nullptr;
  // A grant's token charges (grant_charges.hpp); nullptr: none.
  const char* charges = nullptr;
  uint32 charges_len = 0;
};

// Logs one counted call.  `refund_on_abort`: the call's charge is refunded
// if its transaction rolls back, so its row must not outlive that.  Returns
// the row id (allocate_tokens' allocation_id) when the row has one now:
// always for sync, for grants in async mode; else -1.
int64 log_usage(const UsageRow& row, bool refund_on_abort);

// Inserts one event in the caller's transaction (as the extension owner);
// event.id 0 takes the column default.  Returns the row id.  The
// transaction then cannot be prepared.
int64 insert_usage_row(const UsageEvent& event);

// True when this database can have a worker (launcher.hpp): every
// database, or only the one rate_limiter.database names, and never a
// template or a database that refuses connections.  Only served databases
// queue usage rows and raise alerts.
bool database_served();
// True when calls of this backend use the queue: usage_log = async in a
// served database.
bool usage_log_async();

// Raises 25006 when the caller's transaction cannot write the usage row
// (read-only transaction or hot standby).  Called before any counter is
// charged.
void require_writable_transaction();

void register_usage_log_reset();
void register_usage_log_callbacks();  // once, from _PG_init

}  // namespace rate_limiter::pg
