// The "rate_limiter flusher" background worker.
//
// Connects to rate_limiter.database and, every rate_limiter.flush_interval
// (or at once when the usage queue passes half full or a caller waits for
// a flush):
//   1. moves the queued usage events into token_usage, kFlushBatchEvents per
//      transaction, and advances the queue only after each commit;
//   2. every kMaintenanceIntervalMs: copies the live token counters into
//      token_limits (rate_limiter_snapshot_counters(skip_locked => true)) and
//      deletes at most kRetentionBatchRows token_usage rows older than
//      rate_limiter.usage_retention (never rows within twice the longest
//      window of any limit).
// Does nothing while the extension is not installed in its database or the
// server is in recovery (the queue is kept).  On an error it logs, rolls
// back and retries after kErrorBackoffMs; the events stay queued.  SIGTERM:
// a last flush, then exit (the postmaster restarts it after
// kRestartSeconds unless the server is shutting down).
#pragma once

namespace rate_limiter::pg {

void register_flush_worker();  // from _PG_init

}  // namespace rate_limiter::pg
