// Rules as the PostgreSQL layer uses them: one row of token_limits or
// request_limits in the compact form of the shared rule table
// (core::RuleRecord), read from a tuple by column name, and resolved
// against the settings.
//
// Where rules live (rule_table.hpp, rule_changes.hpp, rule_lookup.hpp):
// every installation's committed rules are in one shared-memory table keyed
// by scope hash; a transaction's own uncommitted changes are in that
// backend's overlay; lookups see the overlay first, then the shared table,
// and only when the table overflowed (rate_limiter.max_rules too small) the
// rule tables themselves.  No backend keeps a copy of all rules.
#pragma once

#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/rules/rule_options.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// The rules of one scope: at most one per limit kind.
struct ScopeRules {
  bool has[core::kLimitKinds] = {false, false};
  core::RuleRecord kind[core::kLimitKinds];
};

// The rule of a record as the core counts it at `at`: for a calendar
// period (calendar_rules.hpp) the fixed window of the period containing
// `at`; else the record's fixed shape.  Counter keys use the record's
// nominal window (r.window_micros), never this rule's.
core::LimitRule limit_rule_of(const core::RuleRecord& r, int64 at) noexcept;
bool has_burst_cap(const core::RuleRecord& r) noexcept;
core::LimitRule burst_cap_of(const core::RuleRecord& r) noexcept;  // always a fixed window

// The strategy parameters of the scope's rule of `kind` under the current
// settings: the row's own value, else (switches only) the other kind's row
// of the same scope, else the setting.
core::StrategyParams resolve_params(const ScopeRules& scope, int kind);

// Whether the scope's rule of `kind` (and its burst cap) is a shadow limit
// under the current settings.
bool is_shadow_limit(const ScopeRules& scope, int kind);

// How far back (microseconds) a usage row can still count for this rule or
// its burst cap: the counter rebuild's replay horizon.
int64 replay_horizon(const core::RuleRecord& r) noexcept;

// Converts an interval to microseconds the way interval comparison does
// (a month is 30 days).
int64 interval_to_micros(const Interval* interval);

// The one reader of rule rows: by column name, so that the same code serves
// the row trigger (the table's own descriptor), the loader and the lookups
// (SELECT *), and with them the counter rebuild; the options are those of
// rule_options.hpp.  bind() requires every column.
class RuleColumns {
 public:
  // kind: which table the descriptor belongs to.
  void bind(TupleDesc desc, core::LimitKind kind);
  bool bound_to(TupleDesc desc) const { return desc_ == desc; }

  // The row's scope ids; nullptr for NULL.  Point into the tuple (or a
  // detoasted copy in the current memory context).
  void ids(HeapTuple tuple, text** user, text** endpoint) const;
  core::RuleRecord record(HeapTuple tuple) const;

 private:
  int at(RuleOption o) const { return option_[static_cast<int>(o)]; }

  TupleDesc desc_ = nullptr;
  core::LimitKind kind_ = core::LimitKind::Tokens;
  int user_ = 0, endpoint_ = 0, limit_ = 0, window_ = 0;
  int option_[kRuleOptionCount] = {};  // attribute numbers
};

}  // namespace rate_limiter::pg
