// Moving one database's queued records into its tables, for its worker
// (database_worker.hpp): usage events into token_usage, alerts into
// rate_limit_alerts with their NOTIFY.  One transaction per batch; the
// stream is consumed only after the commit, so a failed batch is retried
// and nothing is lost.  Records of a former installation that used the
// same slot (the extension dropped, or dropped and created again) are
// dropped: their tables are gone.
#pragma once

#include "rate_limiter/pg/workers/worker_sql.hpp"

namespace rate_limiter::pg {

// Events inserted per transaction: one INSERT of this many rows takes well
// under a second and bounds the worker's memory (a few MB).
constexpr uint64 kFlushBatchEvents = 10000;
// Alerts per transaction, likewise.
constexpr uint64 kAlertBatch = 1000;

// Up to one batch from the stream's tail, not past `end`.  False when there
// was nothing to do (or the installation is gone: *gone).
bool flush_usage_batch(const WorkerTarget& target, uint64 end, bool* gone);
bool flush_alert_batch(const WorkerTarget& target, uint64 end, bool* gone);

// The installation's records at the front of both of its streams, dropped
// unwritten (its slot was reclaimed: its tables are gone).  Stops at the
// first record of another installation: the slot's next occupant's.
void drop_installation_records(const WorkerTarget& target) noexcept;

}  // namespace rate_limiter::pg
