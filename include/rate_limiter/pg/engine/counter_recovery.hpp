// Rebuilding counters from token_usage.
//
// Shared memory is lost at a crash (PostgreSQL resets it after any backend
// crash), and a promoted standby never had counters.  Handing out a fresh
// quota then would break every limit, so before the first decision of an
// installation (database + extension) on a server that did not load its
// counters from the state file (counter_file.hpp), the counters of every
// rule are rebuilt by replaying the usage rows of their current windows
// through the rule's algorithm.  One ordered scan of token_usage by time
// covers every rule: it starts at the installation's longest replay horizon
// (InstallationSlot::longest_horizon, kept as rules arrive) and each row is
// charged to the counters its call would charge now (the rules are looked up
// as the hot path does).  What a rule counts of those rows:
//   fixed_window    rows since the current window start
//   sliding_window  rows since the previous window start
//   token_bucket,   rows since the bucket could last have been full
//   gcra            (capacity x window / limit before now)
//   burst caps      rows since the cap's window start
// Tokens count tokens_used, requests count rows.  Each row is charged
// whole (core::charge_unclamped()), even beyond the current limit: it may
// have been granted under a higher limit lowered since, or from an
// emergency allowance, and the live counter held it whole too.
// Not rebuilt: the dynamic-allocation history, burst budgets and emergency
// allowances, which restart empty.  The work is proportional to the usage
// rows in the horizon, not to the number of rules; memory to the number of
// counters those rows touch.  Rebuilt counters belong to no role's share
// (key_budget.hpp).
//
// The first backend to need an installation rebuilds it (SQL, as the
// extension owner, before any partition lock); the others wait for it, at
// most rate_limiter.recovery_timeout, then fail with 55P03.  Rebuilt states
// are merged into shared memory keeping whichever state has less available,
// so a repeated rebuild never lowers a counter.
#pragma once

#include "rate_limiter/pg/shmem.hpp"

namespace rate_limiter::pg {

// Raises 55P03 when a rebuild by another backend outlasts
// rate_limiter.recovery_timeout; may run SQL.  Call before any lock, with
// the rules loaded (prepare_rule_lookups()).
void ensure_counters_recovered(const ExtensionCatalog* ext);

}  // namespace rate_limiter::pg
