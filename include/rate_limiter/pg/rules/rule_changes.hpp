// A transaction's changes to the rule tables, on their way from the row
// triggers to the shared rule table (rule_table.hpp).
//
// The AFTER ROW triggers on token_limits and request_limits record every
// changed row here, as the record it became or as the removal of its old
// scope, with the subtransaction that made it.  Nothing reaches shared
// memory before the commit: the commit callback applies the changes in
// order, so a change is visible to other sessions once its transaction has
// committed, never before, and a rollback (or ROLLBACK TO SAVEPOINT) simply
// drops it.  A transaction that changes many rules becomes visible rule by
// rule during its commit callback; each rule is always either its old or
// its new version.
//
// Within the transaction, the changes are also the backend's overlay: the
// hot path consults them before the shared table (own_rule_change()), so a
// session sees its own uncommitted rules, as with any table.
//
// Statement-level events (TRUNCATE, the statement triggers of an
// installation not yet updated to 1.2, reload_rate_limits()) do not say
// which rows changed: the installation's rules are then reset at commit and
// loaded again from the tables (rule_loader.hpp), and until the commit this
// transaction reads its own rules from the tables.
//
// PREPARE TRANSACTION is refused when rule changes are pending: the commit
// would happen in another session, where these callbacks cannot follow.
#pragma once

#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

void register_rule_change_callbacks();  // once, from _PG_init

// What this transaction did to a rule key.
enum class OwnChange : uint8 {
  None,     // nothing: read the shared table
  Upsert,   // *out is the rule as this transaction left it
  Delete,   // the transaction removed it
  Unknown,  // a statement-level change is pending: read the rule tables
};

OwnChange own_rule_change(const core::Hash128& key, core::RuleRecord* out);
bool has_own_rule_changes() noexcept;
bool own_rules_reload_pending() noexcept;  // a statement-level change is pending

// reload_rate_limits(): the installation's rules reload after the commit.
void note_rules_reload();

// A row trigger's change of one shared-table record (parent_links.hpp
// records its links through these; the limit tables' trigger is here).
void record_rule_upsert(const ExtensionCatalog* ext, const core::Hash128& key,
                        const core::RuleRecord& record);
void record_rule_delete(const ExtensionCatalog* ext, const core::Hash128& key);

}  // namespace rate_limiter::pg
