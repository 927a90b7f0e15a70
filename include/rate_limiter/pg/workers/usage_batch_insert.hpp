// Inserting one batch of queued usage events into token_usage, for a
// database's worker (queue_flush.hpp), so that one row the table refuses
// cannot hold up the others.
//
// The batch is inserted with one INSERT ... SELECT FROM unnest(...) in a
// subtransaction of the worker's transaction (with SET CONSTRAINTS ALL
// IMMEDIATE, so that deferred constraints fail there, not at the commit).  When it fails because of
// its rows (a CHECK constraint or a trigger on token_usage, a data error),
// each half is tried again, down to single rows; a single row that still
// fails is set aside in token_usage_dead_letters with its error, in a
// subtransaction of its own.  An error that is not the rows' fault (a lock
// or statement timeout, a cancel, a serialization failure, a lack of
// resources, an internal error: transient_error()) is re-thrown: the whole
// batch stays queued and the worker retries it after its backoff, as
// before.  With no dead-letter table (an installation not yet updated to
// 1.2), or when that table refuses the row too, the row is written to the
// server log instead (a WARNING with every field): it is never dropped
// silently.
//
// Cost: a batch with k bad rows among n takes about 2k log2(n) extra
// attempts; a clean batch takes one.
#pragma once

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/usage.hpp"

namespace rate_limiter::pg {

struct BatchInsertResult {
  uint64 inserted = 0;         // rows token_usage took (ON CONFLICT skips not counted)
  uint64 dead_letters = 0;     // rows set aside (in the table or the server log)
  char first_error[256] = "";  // "SQLSTATE: message" of the first row error, for the log
};

// Inside a worker transaction (begin_worker_transaction()): inserts
// events[0, n) as the extension owner.  Explicit ids (grants) are kept; 0
// takes nextval.  Re-throws transient errors.
BatchInsertResult insert_usage_batch(const ExtensionCatalog* ext, const UsageEvent* events, int n);

// Whether an error is not the fault of the rows being inserted, so that
// retrying the same rows later can succeed.
bool transient_error(int sqlerrcode);

}  // namespace rate_limiter::pg
