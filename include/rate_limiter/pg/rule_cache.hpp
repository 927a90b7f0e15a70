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

// The strategy options of one rule row as stored; a negative value (or -1
// for a switch) is NULL: resolve_params() fills it from the request limit
// of the same scope (switches only) or from the settings.
struct RuleOptions {
  int8 dynamic = -1;  // -1 NULL, 0 false, 1 true
  int8 emergency = -1;
  int8 burst_mode = -1;
  int64 history_weight_ppm = -1;
  int64 load_weight_ppm = -1;
  int64 time_weight_ppm = -1;
  int64 emergency_threshold_ppm = -1;
  int64 override_ppm = -1;
  int64 burst_multiplier_ppm = -1;
  int64 burst_window_micros = -1;
  int64 max_burst_tokens = -1;
  // shadow_mode column: -1 NULL (not a shadow limit unless
  // rate_limiter.shadow_mode), 0 false, 1 true.  No fallback to the other
  // kind's row: shadow mode is per limit.
  int8 shadow = -1;
};

// One row of a rule table.
struct KindRule {
  core::LimitRule rule;
  RuleOptions options;
  bool has_burst_cap = false;  // burst_limit over burst_window_seconds
  core::LimitRule burst_cap;   // always a fixed window
};

// The rules of one scope: at most one per limit kind.
struct ScopeRules {
  bool has[core::kLimitKinds] = {false, false};
  KindRule kind[core::kLimitKinds];
};

// The strategy parameters of the scope's rule of `kind` under the current
// settings: the row's own value, else (switches only) the other kind's row
// of the same scope, else the setting.
core::StrategyParams resolve_params(const ScopeRules& scope, int kind);

// Whether the scope's rule of `kind` (and its burst cap) is a shadow limit
// under the current settings.
bool is_shadow_limit(const ScopeRules& scope, int kind);

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
