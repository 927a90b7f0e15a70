#include "rate_limiter/pg/rules/rule_lookup.hpp"

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/rules/concurrency_limits.hpp"
#include "rate_limiter/pg/rules/parent_links.hpp"
#include "rate_limiter/pg/rules/rule_changes.hpp"
#include "rate_limiter/pg/rules/rule_loader.hpp"
#include "rate_limiter/pg/rules/rule_table.hpp"
#include "rate_limiter/pg/rules/time_zones.hpp"
#include "rate_limiter/pg/shmem.hpp"

namespace rate_limiter::pg {
namespace {

// Saved plans of the SQL lookups: [kind][scope kind].  Forgotten with the
// extension catalog (a relcache invalidation of the extension's tables).
SPIPlanPtr plans[core::kLimitKinds][4] = {};
bool plans_stale = false;
RuleColumns sql_columns[core::kLimitKinds];

void forget_plans() {
  // From an invalidation callback: only mark; free at the next use.
  plans_stale = true;
}

SPIPlanPtr lookup_plan(const ExtensionCatalog* ext, core::LimitKind kind, core::ScopeKind scope) {
  if (plans_stale) {
    for (auto& row : plans)
      for (SPIPlanPtr& p : row) {
        if (p != nullptr) SPI_freeplan(p);
        p = nullptr;
      }
    plans_stale = false;
  }
  SPIPlanPtr& slot = plans[static_cast<int>(kind)][static_cast<int>(scope)];
  if (slot != nullptr) return slot;
  static const char* const kWhere[4] = {
      "user_id = $1 AND api_endpoint = $2",        // UserEndpoint
      "user_id = $1 AND api_endpoint IS NULL",     // User
      "user_id IS NULL AND api_endpoint = $2",     // Endpoint
      "user_id IS NULL AND api_endpoint IS NULL",  // Default
  };
  // $1 and $2 are declared in every variant; a variant may leave one unused.
  const char* sql = psprintf("SELECT * FROM %s.%s WHERE %s", ext->quoted_schema,
                             kind == core::LimitKind::Tokens ? "token_limits" : "request_limits",
                             kWhere[static_cast<int>(scope)]);
  Oid types[2] = {TEXTOID, TEXTOID};
  SPIPlanPtr plan = SPI_prepare(sql, 2, types);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the rule lookup");
  if (SPI_keepplan(plan) != 0) elog(ERROR, "rate_limiter: could not save the rule lookup");
  slot = plan;
  return plan;
}

// The rule of (kind, scope) from its table, with the transaction's snapshot.
bool lookup_in_table(const ExtensionCatalog* ext, core::LimitKind kind, core::ScopeKind scope,
                     std::string_view user, std::string_view endpoint, core::RuleRecord* out,
                     RuleView view) {
  metric_add(&shared->metrics.rule_sql_lookups);
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = lookup_plan(ext, kind, scope);
  Datum values[2] = {
      PointerGetDatum(cstring_to_text_with_len(user.data(), static_cast<int>(user.size()))),
      PointerGetDatum(
          cstring_to_text_with_len(endpoint.data(), static_cast<int>(endpoint.size())))};
  // read_only: the plan runs on the active snapshot.  The committed view
  // takes a fresh one that hides this transaction's own changes (curcid 0,
  // as the loader does).
  if (view == RuleView::Committed) {
    PushActiveSnapshot(GetLatestSnapshot());
    GetActiveSnapshot()->curcid = FirstCommandId;
  }
  const int rc = SPI_execute_plan(plan, values, nullptr, true, 1);
  if (view == RuleView::Committed) PopActiveSnapshot();
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: rule lookup failed: %s", SPI_result_code_string(rc));
  const bool found = SPI_processed > 0;
  if (found) {
    RuleColumns& columns = sql_columns[static_cast<int>(kind)];
    columns.bind(SPI_tuptable->tupdesc, kind);
    *out = columns.record(SPI_tuptable->vals[0]);
  }
  SPI_finish();
  owner.restore();
  return found;
}

bool lookup_one(const ExtensionCatalog* ext, core::LimitKind kind, core::ScopeKind scope,
                std::string_view user, std::string_view endpoint, const core::Hash128& key,
                core::RuleRecord* out, RuleView view) {
  switch (view == RuleView::Transaction ? own_rule_change(key, out) : OwnChange::None) {
    case OwnChange::Upsert:
      return true;
    case OwnChange::Delete:
      return false;
    case OwnChange::Unknown:
      return lookup_in_table(ext, kind, scope, user, endpoint, out, view);
    case OwnChange::None:
      break;
  }
  switch (rule_table_get(key, out)) {
    case RuleProbe::Present:
      return true;
    case RuleProbe::Tombstone:
      return false;
    case RuleProbe::Absent:
      break;
  }
  if (pg_atomic_read_u32(&ext->slot->rules_overflowed) == 0) return false;
  return lookup_in_table(ext, kind, scope, user, endpoint, out, view);
}

}  // namespace

void prepare_rule_lookups(const ExtensionCatalog* ext) {
  if (own_rules_reload_pending()) return;
  ensure_rules_loaded(ext);
}

bool installation_has_rules(const ExtensionCatalog* ext) noexcept {
  return pg_atomic_read_u64(&ext->slot->rule_count) > 0 ||
         pg_atomic_read_u32(&ext->slot->rules_overflowed) != 0 || has_own_rule_changes();
}

void lookup_scope_rules(const ExtensionCatalog* ext, core::ScopeKind kind, std::string_view user,
                        std::string_view endpoint, const core::Hash128& scope, ScopeRules* out,
                        RuleView view) {
  *out = ScopeRules{};
  for (int k = 0; k < core::kLimitKinds; ++k) {
    const auto lk = static_cast<core::LimitKind>(k);
    out->has[k] = lookup_one(ext, lk, kind, user, endpoint, core::counter_key(scope, lk),
                             &out->kind[k], view);
    // The zone of a calendar period, for the hot path (time_zones.hpp).
    if (out->has[k]) prepare_time_zone(out->kind[k].period_zone);
  }
}

void collect_applicable_rules(const ExtensionCatalog* ext, std::string_view user, bool has_endpoint,
                              std::string_view endpoint, ApplicableRules* out, RuleView view) {
  // Every field: a caller may reuse one ApplicableRules for many calls (the
  // counter rebuild does), and a scope this call has not must not keep the
  // rules of the previous one.
  out->reset();
  out->any = installation_has_rules(ext);
  if (!out->any) return;
  out->user_scope = scope_of(ext, core::ScopeKind::User, user, {});
  if (has_endpoint) {
    out->user_endpoint_scope = user_endpoint_scope_of(ext, out->user_scope, endpoint);
    lookup_scope_rules(ext, core::ScopeKind::UserEndpoint, user, endpoint, out->user_endpoint_scope,
                       &out->user_endpoint, view);
    out->endpoint_scope = scope_of(ext, core::ScopeKind::Endpoint, {}, endpoint);
    lookup_scope_rules(ext, core::ScopeKind::Endpoint, {}, endpoint, out->endpoint_scope,
                       &out->endpoint, view);
  }
  lookup_scope_rules(ext, core::ScopeKind::User, user, {}, out->user_scope, &out->user, view);
  // The default rule is needed only for a kind the user has no rule of.
  if (!out->user.has[0] || !out->user.has[1]) {
    out->default_scope = scope_of(ext, core::ScopeKind::Default, {}, {});
    lookup_scope_rules(ext, core::ScopeKind::Default, {}, {}, out->default_scope, &out->fallback,
                       view);
  }
  collect_ancestors(ext, user, has_endpoint, endpoint, out, view);
}

int main_counter_keys(const ExtensionCatalog* ext, core::ScopeKind scope, std::string_view user,
                      std::string_view endpoint, RuleView view, core::Hash128* keys) {
  if (!installation_has_rules(ext)) return 0;
  const core::Hash128 hash = scope_of(ext, scope, user, endpoint);
  ScopeRules own, fallback;
  lookup_scope_rules(ext, scope, user, endpoint, hash, &own, view);
  bool fallback_read = false;
  int n = 0;
  for (int k = 0; k < core::kLimitKinds; ++k) {
    const auto kind = static_cast<core::LimitKind>(k);
    const core::RuleRecord* r = own.has[k] ? &own.kind[k] : nullptr;
    if (r == nullptr && scope == core::ScopeKind::User) {
      if (!fallback_read) {
        lookup_scope_rules(ext, core::ScopeKind::Default, {}, {},
                           scope_of(ext, core::ScopeKind::Default, {}, {}), &fallback, view);
        fallback_read = true;
      }
      if (fallback.has[k]) r = &fallback.kind[k];
    }
    if (r != nullptr) keys[n++] = core::limit_key(hash, kind, r->algorithm, r->window_micros);
  }
  return n;
}

void register_rule_lookup_reset() { on_extension_catalog_reset(forget_plans); }

}  // namespace rate_limiter::pg
