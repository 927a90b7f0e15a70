// Concurrency limits: set_concurrency_limit(user, max_in_flight, endpoint,
// lease_timeout) bounds how many granted allocations of the user (on the
// endpoint, or on all endpoints) may be unsettled at once.  The slots
// themselves are leases (engine/leases.hpp); this file is the rules.
//
// Storage.  The rows of concurrency_limits.  In shared memory each row is a
// record of the rule table (rule_table.hpp) of kind kConcurrencyKind, keyed
// by concurrency_key(scope) of its user or user+endpoint scope, holding
// max_in_flight in `limit` and the lease timeout in `window_micros`.  The
// same key is the lease scope: every lease of the scope counts against it.
// Changes travel exactly like rule changes (rule_changes.hpp): the row
// trigger records them, the commit applies them, the changing transaction
// sees its own through the overlay, the loader reads the table, and while
// the table overflowed (or a TRUNCATE is pending) the limits are read from
// concurrency_limits itself.  An installation that never had one pays
// nothing (InstallationSlot::has_concurrency_limits).
//
// Everything here may run SQL and ereport: phase 1 only (boundary.hpp).
#pragma once

#include <string_view>

#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/pg/rules/rule_lookup.hpp"
#include "rate_limiter/pg/shmem.hpp"

namespace rate_limiter::pg {

// RuleRecord::kind of a concurrency limit (see parent_links.hpp for 0x80, 0x81).
constexpr uint8 kConcurrencyKind = 0x82;
constexpr int kMaxLeaseTimeoutDays = 7;  // concurrency_limits_lease_timeout_check

core::Hash128 concurrency_key(const core::Hash128& scope) noexcept;
bool is_concurrency_record(const core::RuleRecord& r) noexcept;
core::RuleRecord concurrency_record(int32 max_in_flight, int64 lease_timeout_micros) noexcept;

// The key and record of one row of concurrency_limits.
bool concurrency_row(const ExtensionCatalog* ext, HeapTuple row, TupleDesc desc, core::Hash128* key,
                     core::RuleRecord* record, bool want_record);

// The concurrency limits of the call's own scopes into out->concurrency
// (user+endpoint first), after collect_applicable_rules() set the scopes;
// only allocate_tokens asks (collect_applicable_rules() leaves none).
void collect_concurrency_limits(const ExtensionCatalog* ext, std::string_view user,
                                bool has_endpoint, std::string_view endpoint, ApplicableRules* out,
                                RuleView view = RuleView::Transaction);

void register_concurrency_limit_reset();  // once, from _PG_init

}  // namespace rate_limiter::pg
