// A database worker's upkeep of its installation, every
// kUpkeepIntervalMs (database_worker.cpp), with work that scales with what
// changed, not with the number of rules:
//
//  - the token_limits snapshot (tokens_used_in_period, period_start) of the
//    scopes whose usage the worker flushed since the last upkeep: the flush
//    notes the (user_id, api_endpoint) of every event (at most
//    kMaxTrackedScopes distinct pairs; a pair seen when the set is full is
//    refreshed at its next flush), and upkeep updates the rows of those
//    users, user/endpoint pairs and endpoints only, kUpkeepBatchScopes
//    pairs per transaction, through rate_limiter_snapshot_scopes() (a join,
//    SKIP LOCKED: a row another session holds is left alone).
//    rate_limiter_flush() still refreshes every row, on request;
//  - retention: at most kRetentionBatchRows token_usage rows per round that
//    are older than rate_limiter.usage_retention and than twice the
//    installation's replay horizon (InstallationSlot::longest_horizon: the
//    farthest back any rule can count a row) or burst budget window.
//
// Every statement is short and the loop between them checks the worker's
// stop request, so a shutdown never waits for a whole round.
#pragma once

#include "rate_limiter/pg/usage.hpp"
#include "rate_limiter/pg/workers/worker_sql.hpp"

namespace rate_limiter::pg {

constexpr long kMaxTrackedScopes = 100000;
constexpr int kUpkeepBatchScopes = 5000;
constexpr int kRetentionBatchRows = 10000;

// From the usage flush (inside its transaction; may allocate).
void note_flushed_scope(const UsageEvent& event);
// True when the noted scopes reached kMaxTrackedScopes: upkeep is due now.
bool flushed_scopes_full();

// One round: the snapshot of the noted scopes, then one retention batch.
// `stop` is checked between transactions.  Returns true when retention is
// behind (its batch was full).  *gone: the installation is no longer there.
bool run_upkeep(const WorkerTarget& target, bool (*stop)(), bool* gone);

}  // namespace rate_limiter::pg
