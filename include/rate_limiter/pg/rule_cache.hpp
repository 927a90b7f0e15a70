// Per-backend cache of the rule tables (token_limits, request_limits).
//
// The hot path never runs SQL to find a rule.  Each backend keeps every rule
// of its database in a sorted flat map keyed by the scope's 128-bit hash.
// Staleness is detected with SharedState::rules_generation, which is bumped
// after every commit that changed a rule table (rule_changes.cpp): a backend
// that sees a newer generation reloads all rules, with a fresh snapshot,
// before its next decision.  So a change is visible to every session right
// after it commits, and never before; a rolled-back change is never seen by
// other sessions.  Within its own transaction a session sees its own
// uncommitted rule changes, as with any table.
#pragma once

#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/postgres.hpp"

namespace rate_limiter::pg {

// The rules of one scope: at most one per limit kind.
struct ScopeRules {
  bool has[core::kLimitKinds] = {false, false};
  core::LimitRule rule[core::kLimitKinds];
};

// Reloads the cache when the shared generation moved on or the cache was
// invalidated.  May run SQL and ereport: call it before taking any lock.
void ensure_rules_current();

// nullptr when no rule exists for the scope.  Valid until the next
// ensure_rules_current().
const ScopeRules* find_scope_rules(const core::Hash128& scope);

// True when no rule exists at all (lets the hot path skip hashing).
bool rule_cache_empty();

// The installation id the cached rules were hashed with (see scope_hash()),
// and the scope hash of the default rule.
uint64 rules_installation();
const core::Hash128& default_scope_hash();

// Forgets the cache; the next ensure_rules_current() reloads.
void invalidate_rule_cache();

// Converts an interval to microseconds the way interval comparison does
// (a month is 30 days).
int64 interval_to_micros(const Interval* interval);

}  // namespace rate_limiter::pg
