// rate_limiter_flush_usage(): makes every usage row of calls made before it
// visible in token_usage, for rate_limiter_flush() and settle_tokens, and
// every alert raised before it visible in rate_limit_alerts.
//
// It waits for the flusher rather than inserting the queued rows itself:
// the queue has a single consumer, which advances it only after its own
// commit; a caller that inserted them in its transaction could roll back
// after the queue had moved on, and the rows would be lost.  The events of
// this transaction's refund_on_abort calls are not in the queue yet; they
// are inserted here, in the caller's transaction, which they follow anyway.
//
// Rows the flusher commits are visible to the caller's next statement under
// READ COMMITTED; a REPEATABLE READ snapshot taken earlier does not see them.
#include "rate_limiter/pg/alert_queue.hpp"
#include "rate_limiter/pg/boundary.hpp"
#include "rate_limiter/pg/shared_state.hpp"
#include "rate_limiter/pg/usage_log.hpp"
#include "rate_limiter/pg/usage_pending.hpp"
#include "rate_limiter/pg/usage_queue.hpp"

using namespace rate_limiter::pg;

RL_SQL_FUNCTION(rate_limiter_flush_usage) {
  require_shared_state();
  materialize_pending_usage();
  // Other databases write synchronously: nothing of theirs is queued.
  // Alerts too (only the flusher's database raises them): wait for those
  // raised so far, so that tests and monitoring see them after
  // rate_limiter_flush() without sleeping.
  if (in_flusher_database()) {
    wait_for_usage_flush();
    wait_for_alert_flush();
  }
  PG_RETURN_VOID();
}
