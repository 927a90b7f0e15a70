// Finding the rules that apply to a call, before any counter lock is taken.
//
// For each scope key: this transaction's own change (rule_changes.hpp),
// else the shared rule table (rule_table.hpp), else, only for an
// installation whose rules overflowed the table or while this transaction
// has a statement-level change pending, an index lookup in the rule table
// itself (SQL, with the transaction's snapshot).  The hot path stays free
// of SQL whenever rate_limiter.max_rules holds every rule.
//
// Everything here may run SQL and ereport: phase 1 only (boundary.hpp).
#pragma once

#include <string_view>

#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/pg/rules/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"

namespace rate_limiter::pg {

// Makes the installation's rules ready (rule_loader.hpp) unless this
// transaction has a statement-level change pending (then its own lookups go
// to the tables, and a load here could read a TRUNCATE that may roll back).
void prepare_rule_lookups(const ExtensionCatalog* ext);

// False when no rule can apply to anyone: the hot path skips its lookups.
bool installation_has_rules(const ExtensionCatalog* ext) noexcept;

// Whose view of the rules a lookup takes: this transaction's (its own
// uncommitted changes included, as every call sees them), or only what
// has committed (the counter rebuild, whose counters every session shares).
enum class RuleView : uint8 { Transaction, Committed };

// The rules of one scope.  user/endpoint are the scope's ids (empty when
// the scope has none); `scope` is scope_of() of the same.
void lookup_scope_rules(const ExtensionCatalog* ext, core::ScopeKind kind, std::string_view user,
                        std::string_view endpoint, const core::Hash128& scope, ScopeRules* out,
                        RuleView view = RuleView::Transaction);

// One ancestor of the user (parent_links.hpp): its scopes and its rules on
// the call's endpoint and on all endpoints.  No default rule applies to an
// ancestor.
struct AncestorRules {
  core::Hash128 user_scope, user_endpoint_scope;
  ScopeRules user, user_endpoint;
  // Its id, '\0'-terminated; empty when it has no limit (nobody needs its
  // name) or it could not be found (its link was removed meanwhile).  The
  // shared rule table knows an ancestor by its scope only, so the lookup
  // names it (parent_links.hpp) before any counter is charged: naming it
  // later could fail after the charge.
  char id[core::kMaxIdBytes + 1];
};

// A concurrency limit of the call's own scopes (concurrency_limits.hpp):
// the lease scope and the limit.
struct ConcurrencyLimit {
  core::Hash128 lease_scope;
  core::ScopeKind scope = core::ScopeKind::User;  // User or UserEndpoint
  int32 max_in_flight = 0;
  int64 lease_timeout = 0;  // microseconds
};

// The scopes that can apply to a call for (user, endpoint), looked up.
struct ApplicableRules {
  ApplicableRules() noexcept {}  // the ancestors stay unconstructed (see below)
  // As a new one, without copying the ancestors' storage.
  void reset() noexcept {
    any = false;
    user_endpoint_scope = user_scope = endpoint_scope = default_scope = core::Hash128{};
    user_endpoint = user = endpoint = fallback = ScopeRules{};
    ancestor_count = 0;
    concurrency_count = 0;
  }

  bool any = false;  // false: no rule applies (nothing below is set)
  core::Hash128 user_endpoint_scope, user_scope, endpoint_scope, default_scope;
  ScopeRules user_endpoint, user, endpoint, fallback;  // fallback: the default rule
  // The user's parent, its parent, ...: [0, ancestor_count), nearest first,
  // each written whole by the lookup before it is read.
  int ancestor_count = 0;
  UninitializedArray<AncestorRules, core::kMaxAncestors> ancestors;
  // The user's and the user's-on-this-endpoint concurrency limits,
  // [0, concurrency_count), user+endpoint first.
  int concurrency_count = 0;
  ConcurrencyLimit concurrency[2];
};

void collect_applicable_rules(const ExtensionCatalog* ext, std::string_view user, bool has_endpoint,
                              std::string_view endpoint, ApplicableRules* out,
                              RuleView view = RuleView::Transaction);

// The main counter keys (tokens, requests) of one scope under the rules
// that apply to it now: its own rule of each kind, or for the user scope the
// default rule counted in the user's counter.  Returns how many (0 to 2).
int main_counter_keys(const ExtensionCatalog* ext, core::ScopeKind scope, std::string_view user,
                      std::string_view endpoint, RuleView view, core::Hash128* keys);

void register_rule_lookup_reset();  // once, from _PG_init

}  // namespace rate_limiter::pg
