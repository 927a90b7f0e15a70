#include "rate_limiter/pg/rules/parent_links.hpp"

#include <cstddef>
#include <type_traits>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/rules/rule_changes.hpp"
#include "rate_limiter/pg/rules/rule_table.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

// The parent's user scope, tag bits cleared (the tag is the installation's
// at the time of the lookup), in the two int64 fields every record has.
core::RuleRecord link_record(const core::Hash128& parent_scope) noexcept {
  core::RuleRecord r;
  const core::Hash128 untagged = core::with_tag(parent_scope, 0);
  r.limit = static_cast<int64>(untagged.hi);
  r.window_micros = static_cast<int64>(untagged.lo);
  r.kind = kParentLinkKind;
  return r;
}

core::Hash128 parent_of(const ExtensionCatalog* ext, const core::RuleRecord& r) noexcept {
  return core::with_tag(
      core::Hash128{static_cast<uint64>(r.limit), static_cast<uint64>(r.window_micros)}, ext->tag);
}

// ---- the ancestors of one user, from rate_limit_parents (SQL) ----

SPIPlanPtr chain_plan = nullptr;
bool chain_plan_stale = false;

SPIPlanPtr prepare_chain(const ExtensionCatalog* ext) {
  if (chain_plan_stale) {
    if (chain_plan != nullptr) SPI_freeplan(chain_plan);
    chain_plan = nullptr;
    chain_plan_stale = false;
  }
  if (chain_plan != nullptr) return chain_plan;
  // The depth bound keeps a cycle that reached the table some other way
  // (triggers disabled, a restore) from recursing for ever.
  const char* sql = psprintf(
      "WITH RECURSIVE up(id, depth) AS ("
      " SELECT p.parent_id, 1 FROM %s.rate_limit_parents p WHERE p.child_id = $1"
      " UNION ALL"
      " SELECT p.parent_id, up.depth + 1 FROM %s.rate_limit_parents p JOIN up"
      " ON p.child_id OPERATOR(pg_catalog.=) up.id WHERE up.depth < %d)"
      " SELECT up.id FROM up ORDER BY up.depth",
      ext->quoted_schema, ext->quoted_schema, core::kMaxAncestors);
  Oid types[1] = {TEXTOID};
  SPIPlanPtr plan = SPI_prepare(sql, 1, types);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the parent lookup");
  if (SPI_keepplan(plan) != 0) elog(ERROR, "rate_limiter: could not save the parent lookup");
  chain_plan = plan;
  return plan;
}

using IdBuffer = char[core::kMaxIdBytes + 1];

// The ids above `user`, nearest first, into `ids` (nothing is allocated
// outside SPI's memory); returns how many (at most kMaxAncestors).
int read_chain(const ExtensionCatalog* ext, std::string_view user, RuleView view, IdBuffer* ids) {
  metric_add(&shared->metrics.rule_sql_lookups);
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = prepare_chain(ext);
  Datum values[1] = {
      PointerGetDatum(cstring_to_text_with_len(user.data(), static_cast<int>(user.size())))};
  // As rule_lookup.cpp does: the committed view hides this transaction's
  // own changes.
  if (view == RuleView::Committed) {
    PushActiveSnapshot(GetLatestSnapshot());
    GetActiveSnapshot()->curcid = FirstCommandId;
  }
  const int rc = SPI_execute_plan(plan, values, nullptr, true, core::kMaxAncestors);
  if (view == RuleView::Committed) PopActiveSnapshot();
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: parent lookup failed: %s", SPI_result_code_string(rc));
  int n = 0;
  for (uint64 i = 0; i < SPI_processed && n < core::kMaxAncestors; ++i) {
    bool isnull = false;
    const Datum d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
    if (isnull) break;
    text* t = DatumGetTextPP(d);
    text_to_cstring_buffer(t, ids[n++], sizeof(IdBuffer));
  }
  SPI_finish();
  owner.restore();
  return n;
}

// ---- a parent's id, in name records ----
//
// Record i holds bytes [64 i, 64 i + 64) of (length byte, id bytes) in the
// leading 64 bytes of a RuleRecord, which are all plain integers; its kind
// says what it is.
constexpr std::size_t kNameChunkBytes = 64;
constexpr int kNameChunks =
    static_cast<int>((1 + core::kMaxIdBytes + kNameChunkBytes - 1) / kNameChunkBytes);
static_assert(offsetof(core::RuleRecord, algorithm) >= kNameChunkBytes);
static_assert(core::kMaxIdBytes < 256);  // the length fits its byte
static_assert(std::is_trivially_copyable_v<core::RuleRecord>);

core::Hash128 name_key(const core::Hash128& scope, int chunk) noexcept {
  return core::limit_key(scope, core::LimitKind::Tokens, static_cast<uint8>(0xF0 + chunk), 0,
                         core::CounterRole::ParentLink);
}

void forget_plans() {
  // From an invalidation callback: no catalog access; free later.
  chain_plan_stale = true;
}

bool sql_links(const ExtensionCatalog* ext, RuleView view) noexcept {
  return (view == RuleView::Transaction && own_rules_reload_pending()) ||
         pg_atomic_read_u32(&ext->slot->rules_overflowed) != 0;
}

// The parent of the user whose user scope is `child`.
bool shared_parent(const ExtensionCatalog* ext, const core::Hash128& child, RuleView view,
                   core::Hash128* parent) {
  core::RuleRecord r;
  if (!shared_record(parent_link_key(child), view, kParentLinkKind, &r)) return false;
  *parent = parent_of(ext, r);
  return true;
}

// The id of the parent whose user scope is `scope` into `out`; false when
// its name records are not all there.
bool shared_name(const core::Hash128& scope, RuleView view, char* out) {
  unsigned char bytes[kNameChunks * kNameChunkBytes] = {};
  int chunks = 1;
  for (int i = 0; i < chunks; ++i) {
    core::RuleRecord r;
    if (!shared_record(name_key(scope, i), view, kParentNameKind, &r)) return false;
    memcpy(bytes + i * kNameChunkBytes, &r, kNameChunkBytes);
    if (i == 0) chunks = static_cast<int>((1 + bytes[0] + kNameChunkBytes - 1) / kNameChunkBytes);
  }
  const int length = bytes[0];
  if (length < 1 || length > static_cast<int>(core::kMaxIdBytes)) return false;
  memcpy(out, bytes + 1, length);
  out[length] = '\0';
  return true;
}

void note_rows_changed(const ExtensionCatalog* ext, HeapTuple row, TupleDesc desc, bool removed) {
  bool isnull = false;
  const Datum child = SPI_getbinval(row, desc, SPI_fnumber(desc, "child_id"), &isnull);
  if (isnull) return;
  const Datum parent = SPI_getbinval(row, desc, SPI_fnumber(desc, "parent_id"), &isnull);
  if (isnull && !removed) return;
  text* c = DatumGetTextPP(child);
  const std::string_view child_id(VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c));
  std::string_view parent_id;
  if (!isnull) {
    text* p = DatumGetTextPP(parent);
    parent_id = std::string_view(VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p));
  }
  if (removed) {
    record_rule_delete(ext, parent_link_key(scope_of(ext, core::ScopeKind::User, child_id, {})));
    return;
  }
  LinkRecords records;
  link_records(ext, child_id, parent_id, &records);
  for (int i = 0; i < records.count; ++i)
    record_rule_upsert(ext, records.keys[i], records.records[i]);
}

}  // namespace

bool shared_record(const core::Hash128& key, RuleView view, uint8 kind, core::RuleRecord* r) {
  switch (view == RuleView::Transaction ? own_rule_change(key, r) : OwnChange::None) {
    case OwnChange::Upsert:
      return r->kind == kind;
    case OwnChange::Delete:
    case OwnChange::Unknown:  // the callers ask SQL then, and do not get here
      return false;
    case OwnChange::None:
      break;
  }
  return rule_table_get(key, r) == RuleProbe::Present && r->kind == kind;
}

core::Hash128 parent_link_key(const core::Hash128& child_user_scope) noexcept {
  return core::counter_key(child_user_scope, core::LimitKind::Tokens,
                           core::CounterRole::ParentLink);
}

bool is_parent_link(const core::RuleRecord& r) noexcept { return r.kind == kParentLinkKind; }

bool is_hierarchy_record(const core::RuleRecord& r) noexcept {
  return r.kind == kParentLinkKind || r.kind == kParentNameKind;
}

void link_records(const ExtensionCatalog* ext, std::string_view child, std::string_view parent,
                  LinkRecords* out) {
  const core::Hash128 parent_scope = scope_of(ext, core::ScopeKind::User, parent, {});
  out->count = 0;
  out->keys[0] = parent_link_key(scope_of(ext, core::ScopeKind::User, child, {}));
  out->records[0] = link_record(parent_scope);
  out->count = 1;
  unsigned char bytes[kNameChunks * kNameChunkBytes] = {};
  const std::size_t length = Min(parent.size(), core::kMaxIdBytes);
  bytes[0] = static_cast<unsigned char>(length);
  memcpy(bytes + 1, parent.data(), length);
  const int chunks = static_cast<int>((1 + length + kNameChunkBytes - 1) / kNameChunkBytes);
  for (int i = 0; i < chunks; ++i) {
    core::RuleRecord r;
    memcpy(static_cast<void*>(&r), bytes + i * kNameChunkBytes, kNameChunkBytes);
    r.kind = kParentNameKind;
    out->keys[out->count] = name_key(parent_scope, i);
    out->records[out->count++] = r;
  }
}

void collect_ancestors(const ExtensionCatalog* ext, std::string_view user, bool has_endpoint,
                       std::string_view endpoint, ApplicableRules* out, RuleView view) {
  out->ancestor_count = 0;
  IdBuffer ids[core::kMaxAncestors];
  core::Hash128 scopes[core::kMaxAncestors];
  int n = 0;
  const bool from_sql = sql_links(ext, view);
  if (from_sql) {
    n = read_chain(ext, user, view, ids);
    for (int i = 0; i < n; ++i) scopes[i] = scope_of(ext, core::ScopeKind::User, ids[i], {});
  } else if (pg_atomic_read_u32(&ext->slot->has_parent_links) != 0 ||
             (view == RuleView::Transaction && has_own_rule_changes())) {
    // No link has reached the table (nor this transaction's overlay): an
    // installation without a hierarchy pays nothing for it.
    core::Hash128 at = out->user_scope;
    while (n < core::kMaxAncestors && shared_parent(ext, at, view, &scopes[n])) at = scopes[n++];
  }
  for (int i = 0; i < n; ++i) {
    // A scope seen before closes a cycle: the walk ends there.
    bool seen = scopes[i] == out->user_scope;
    for (int j = 0; j < i && !seen; ++j) seen = scopes[j] == scopes[i];
    if (seen) break;
    AncestorRules& a = out->ancestors[i];
    a.user_scope = scopes[i];
    const std::string_view id = from_sql ? std::string_view(ids[i]) : std::string_view();
    lookup_scope_rules(ext, core::ScopeKind::User, id, {}, a.user_scope, &a.user, view);
    if (has_endpoint) {
      a.user_endpoint_scope = user_endpoint_scope_of(ext, a.user_scope, endpoint);
      lookup_scope_rules(ext, core::ScopeKind::UserEndpoint, id, endpoint, a.user_endpoint_scope,
                         &a.user_endpoint, view);
    } else {
      a.user_endpoint_scope = core::Hash128{};
      a.user_endpoint = ScopeRules{};
    }
    a.id[0] = '\0';
    out->ancestor_count = i + 1;
    const bool limited =
        a.user.has[0] || a.user.has[1] || a.user_endpoint.has[0] || a.user_endpoint.has[1];
    if (!limited) continue;
    if (from_sql) {
      strlcpy(a.id, ids[i], sizeof a.id);
      continue;
    }
    if (!shared_name(a.user_scope, view, a.id)) a.id[0] = '\0';
  }
}

void register_parent_link_reset() { on_extension_catalog_reset(forget_plans); }

}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW on rate_limit_parents:
// records the link's change for the commit, like rate_limiter_rules_changed
// does for limits.  FOR EACH STATEMENT (TRUNCATE): every rule and link of
// the installation reloads after the commit.
RL_SQL_FUNCTION(rate_limiter_parents_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("rate_limiter_parents_changed() must be called as a trigger")));
  require_shared_state();
  auto* td = reinterpret_cast<TriggerData*>(fcinfo->context);
  if (!TRIGGER_FIRED_FOR_ROW(td->tg_event)) {
    note_rules_reload();
    return PointerGetDatum(nullptr);
  }
  const ExtensionCatalog* ext = extension_catalog();
  TupleDesc desc = RelationGetDescr(td->tg_relation);
  if (TRIGGER_FIRED_BY_INSERT(td->tg_event)) {
    note_rows_changed(ext, td->tg_trigtuple, desc, false);
  } else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
    note_rows_changed(ext, td->tg_trigtuple, desc, true);
    note_rows_changed(ext, td->tg_newtuple, desc, false);
  } else if (TRIGGER_FIRED_BY_DELETE(td->tg_event)) {
    note_rows_changed(ext, td->tg_trigtuple, desc, true);
  }
  return PointerGetDatum(nullptr);
}
