// Hierarchies: set_parent(child, parent) makes every limit of the parent
// (and of its parent, up to core::kMaxAncestors levels) apply to the
// child's calls too, all or nothing with the child's own limits.  Ids live
// in the user-id namespace: a tenant or a team is a "user" whose limits are
// set with the same set_* functions and counted in the same counters, so a
// team's counter holds the calls of all its members and of the team itself.
//
// Storage.  The links are the rows of rate_limit_parents (child_id,
// parent_id).  In shared memory each link is a record of the rule table
// (rule_table.hpp) keyed by parent_link_key(child's user scope) and holding
// the parent's user scope, so an ancestor is known by its scope hash, from
// which its per-endpoint scope follows (core::user_endpoint_scope).  A
// parent's id, which results and grant charges name, is kept next to it as
// one to four name records (64 bytes each) keyed by its scope: the hot path
// names an ancestor with hash probes, never with SQL.  A name record is
// written with every link to the parent and stays until the installation's
// rules are reloaded (a scope's name never changes, so a stale one is only
// a record of rate_limiter.max_rules spent).  Link changes travel exactly like rule
// changes (rule_changes.hpp): the row trigger records them, the commit
// applies them, the changing transaction sees its own through the overlay,
// the loader reads the table, and while the table overflowed (or a
// TRUNCATE is pending) the links are read from rate_limit_parents itself.
//
// Cycles and depth are refused by set_parent() (SQL), which serialises
// hierarchy changes with a table lock; the walk below still stops at a
// scope it has seen and after kMaxAncestors levels, so a hierarchy that
// reached the table some other way (the triggers disabled, a restore)
// cannot make a call loop or lock more partitions than the bound.
//
// Everything here may run SQL and ereport: phase 1 only (boundary.hpp).
#pragma once

#include <string_view>

#include "rate_limiter/core/rule_table.hpp"
#include "rate_limiter/pg/rules/rule_lookup.hpp"
#include "rate_limiter/pg/shmem.hpp"

namespace rate_limiter::pg {

// RuleRecord::kind of a parent link and of a parent's name record (rule
// kinds are core::LimitKind values).
constexpr uint8 kParentLinkKind = 0x80;
constexpr uint8 kParentNameKind = 0x81;

core::Hash128 parent_link_key(const core::Hash128& child_user_scope) noexcept;

// The record of `key` as this transaction sees it (its own change, else
// the shared table), if it is of `kind` (a record that is not a limit:
// links, names, concurrency limits).  Not for a view whose lookups must go
// to SQL (rules overflowed, or a TRUNCATE pending in this transaction).
bool shared_record(const core::Hash128& key, RuleView view, uint8 kind, core::RuleRecord* r);
bool is_parent_link(const core::RuleRecord& r) noexcept;
// A link or a name record: counts nothing, has no shape.
bool is_hierarchy_record(const core::RuleRecord& r) noexcept;

// The shared-table records of the link child -> parent: the link and the
// parent's name records, each passed to emit(key, record).  Returns how
// many (at most 1 + 4).
struct LinkRecords {
  int count = 0;
  core::Hash128 keys[5];
  core::RuleRecord records[5];
};
void link_records(const ExtensionCatalog* ext, std::string_view child, std::string_view parent,
                  LinkRecords* out);

// Fills out->ancestors (and ancestor_count) for a call of `user`, whose
// user scope is out->user_scope: nearest first, with their rules, and the
// id of each that has a limit (its name records).
void collect_ancestors(const ExtensionCatalog* ext, std::string_view user, bool has_endpoint,
                       std::string_view endpoint, ApplicableRules* out, RuleView view);

void register_parent_link_reset();  // once, from _PG_init

}  // namespace rate_limiter::pg
