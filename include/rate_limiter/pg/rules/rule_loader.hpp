// Getting an installation's rules into the shared rule table, and out again.
//
// Load (first use after a server start, or after a reset): the first
// session that needs the rules claims the load (RulesState::Loading),
// reads both rule tables through a cursor with a snapshot taken after the
// claim, and inserts every row that the table does not hold yet.  Commits
// made meanwhile are applied by their own sessions (rule_changes.hpp),
// deletes as tombstones, so the loader, which never overwrites, cannot
// bring back an old version.  Other sessions wait for the load (at most
// rate_limiter.recovery_timeout, then 55P03); a load that fails or is
// cancelled leaves what it inserted, and the next session carries on.
//
// Reset (TRUNCATE, reload_rate_limits(), a load that could not record a
// change): Resetting, the epoch moves on (stale loader writes are refused
// under the partition locks), the installation's records are swept,
// NotLoaded.
//
// Overflow: a record that does not fit (rate_limiter.max_rules) sets the
// installation's rules_overflowed; from then on a rule missing from the
// table is looked up in the rule tables (rule_lookup.hpp) until a reset
// finds room for all of them.
#pragma once

#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/pg/shmem.hpp"

namespace rate_limiter::pg {

// Phase 1 of a call: may run SQL, wait and ereport.
void ensure_rules_loaded(const ExtensionCatalog* ext);

// Cannot fail (commit callbacks): the state is left Resetting only while
// the sweep runs.
void reset_installation_rules(InstallationSlot* slot) noexcept;

// Book-keeping after a write to the rule table: rule_count, the replay
// horizon and the overflow flag.
void note_rule_write(InstallationSlot* slot, core::RuleWrite write,
                     const core::RuleRecord& record) noexcept;
void note_rule_removed(InstallationSlot* slot) noexcept;

}  // namespace rate_limiter::pg
