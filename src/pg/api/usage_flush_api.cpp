// rate_limiter_flush_usage(): makes every usage row of calls made before it
// visible in token_usage, for rate_limiter_flush() and settle_tokens, and
// every alert raised before it visible in rate_limit_alerts.
//
// It waits for the database's worker rather than inserting the queued rows
// itself: each stream has a single consumer, which advances it only after
// its own commit; a caller that inserted them in its transaction could roll
// back after the queue had moved on, and the rows would be lost.  Only this
// database's streams are waited for: another database's backlog (a worker
// that is slow or not running) never delays it.  The events of
// this transaction's refund_on_abort calls are not in the queue yet; they
// are inserted here, in the caller's transaction, which they follow anyway.
//
// Rows the flusher commits are visible to the caller's next statement under
// READ COMMITTED; a REPEATABLE READ snapshot taken earlier does not see them.
#include "rate_limiter/pg/alerts.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"

using namespace rate_limiter::pg;

RL_SQL_FUNCTION(rate_limiter_flush_usage) {
  require_shared_state();
  materialize_pending_usage();
  // A database that is not served writes synchronously and raises no
  // alerts: nothing of its own is queued.  Alerts are waited for too, so
  // that tests and monitoring see them after rate_limiter_flush() without
  // sleeping.
  if (database_served()) {
    const int stream = installation_index(extension_catalog()->slot);
    wait_for_usage_flush(stream);
    wait_for_alert_flush(stream);
  }
  PG_RETURN_VOID();
}
