#include "rate_limiter/pg/rules/concurrency_limits.hpp"

#include "rate_limiter/core/lease_table.hpp"
#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/rules/parent_links.hpp"
#include "rate_limiter/pg/rules/rule_changes.hpp"
#include "rate_limiter/pg/rules/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

// ---- the limits of one user, from concurrency_limits (SQL) ----

SPIPlanPtr limits_plan = nullptr;
bool limits_plan_stale = false;

void forget_plans() {
  // From an invalidation callback: no catalog access; free later.
  limits_plan_stale = true;
}

SPIPlanPtr prepare_limits(const ExtensionCatalog* ext) {
  if (limits_plan_stale) {
    if (limits_plan != nullptr) SPI_freeplan(limits_plan);
    limits_plan = nullptr;
    limits_plan_stale = false;
  }
  if (limits_plan != nullptr) return limits_plan;
  const char* sql = psprintf(
      "SELECT c.api_endpoint IS NOT NULL, c.max_in_flight, c.lease_timeout"
      " FROM %s.concurrency_limits c WHERE c.user_id OPERATOR(pg_catalog.=) $1"
      " AND (c.api_endpoint IS NULL OR ($3 AND c.api_endpoint OPERATOR(pg_catalog.=) $2))",
      ext->quoted_schema);
  Oid types[3] = {TEXTOID, TEXTOID, BOOLOID};
  SPIPlanPtr plan = SPI_prepare(sql, 3, types);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the concurrency limit lookup");
  if (SPI_keepplan(plan) != 0)
    elog(ERROR, "rate_limiter: could not save the concurrency limit lookup");
  limits_plan = plan;
  return plan;
}

void add_limit(ApplicableRules* out, core::ScopeKind kind, const core::Hash128& scope,
               const core::RuleRecord& r) {
  ConcurrencyLimit& c = out->concurrency[out->concurrency_count++];
  c.lease_scope = concurrency_key(scope);
  c.scope = kind;
  c.max_in_flight = static_cast<int32>(r.limit);
  c.lease_timeout = r.window_micros;
}

// Reads both rows (user, user+endpoint) at once; user+endpoint first.
void read_limits(const ExtensionCatalog* ext, std::string_view user, bool has_endpoint,
                 std::string_view endpoint, ApplicableRules* out, RuleView view) {
  metric_add(&shared->metrics.rule_sql_lookups);
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = prepare_limits(ext);
  Datum values[3] = {
      PointerGetDatum(cstring_to_text_with_len(user.data(), static_cast<int>(user.size()))),
      PointerGetDatum(cstring_to_text_with_len(endpoint.data(), static_cast<int>(endpoint.size()))),
      BoolGetDatum(has_endpoint)};
  // As rule_lookup.cpp does: the committed view hides this transaction's
  // own changes.
  if (view == RuleView::Committed) {
    PushActiveSnapshot(GetLatestSnapshot());
    GetActiveSnapshot()->curcid = FirstCommandId;
  }
  const int rc = SPI_execute_plan(plan, values, nullptr, true, 2);
  if (view == RuleView::Committed) PopActiveSnapshot();
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: concurrency limit lookup failed: %s", SPI_result_code_string(rc));
  core::RuleRecord rows[2];
  bool have[2] = {false, false};  // [0] user+endpoint, [1] user
  for (uint64 i = 0; i < SPI_processed && i < 2; ++i) {
    HeapTuple t = SPI_tuptable->vals[i];
    TupleDesc d = SPI_tuptable->tupdesc;
    bool isnull = false;
    const int at = DatumGetBool(SPI_getbinval(t, d, 1, &isnull)) ? 0 : 1;
    const int32 max = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
    const int64 timeout = interval_to_micros(DatumGetIntervalP(SPI_getbinval(t, d, 3, &isnull)));
    rows[at] = concurrency_record(max, timeout);
    have[at] = true;
  }
  SPI_finish();
  owner.restore();
  if (have[0]) add_limit(out, core::ScopeKind::UserEndpoint, out->user_endpoint_scope, rows[0]);
  if (have[1]) add_limit(out, core::ScopeKind::User, out->user_scope, rows[1]);
}

void note_row_changed(const ExtensionCatalog* ext, HeapTuple row, TupleDesc desc, bool removed) {
  core::Hash128 key;
  core::RuleRecord record;
  if (!concurrency_row(ext, row, desc, &key, &record, !removed)) return;
  if (removed)
    record_rule_delete(ext, key);
  else
    record_rule_upsert(ext, key, record);
}

}  // namespace

core::Hash128 concurrency_key(const core::Hash128& scope) noexcept {
  return core::counter_key(scope, core::LimitKind::Tokens, core::CounterRole::Concurrency);
}

bool is_concurrency_record(const core::RuleRecord& r) noexcept {
  return r.kind == kConcurrencyKind;
}

core::RuleRecord concurrency_record(int32 max_in_flight, int64 lease_timeout_micros) noexcept {
  core::RuleRecord r;
  // The table's CHECKs bound both; a row written around them (triggers
  // disabled, a restore) is clamped, so now + lease_timeout cannot overflow.
  r.limit = Min(Max(max_in_flight, 1), core::kMaxInFlight);
  r.window_micros = Min(Max(lease_timeout_micros, static_cast<int64>(USECS_PER_SEC)),
                        static_cast<int64>(kMaxLeaseTimeoutDays) * USECS_PER_DAY);
  r.kind = kConcurrencyKind;
  return r;
}

bool concurrency_row(const ExtensionCatalog* ext, HeapTuple row, TupleDesc desc, core::Hash128* key,
                     core::RuleRecord* record, bool want_record) {
  bool isnull = false;
  const Datum user = SPI_getbinval(row, desc, SPI_fnumber(desc, "user_id"), &isnull);
  if (isnull) return false;
  const Datum endpoint = SPI_getbinval(row, desc, SPI_fnumber(desc, "api_endpoint"), &isnull);
  const bool has_endpoint = !isnull;
  text* u = DatumGetTextPP(user);
  const std::string_view user_id(VARDATA_ANY(u), VARSIZE_ANY_EXHDR(u));
  const core::Hash128 user_scope = scope_of(ext, core::ScopeKind::User, user_id, {});
  if (has_endpoint) {
    text* e = DatumGetTextPP(endpoint);
    const std::string_view endpoint_id(VARDATA_ANY(e), VARSIZE_ANY_EXHDR(e));
    *key = concurrency_key(user_endpoint_scope_of(ext, user_scope, endpoint_id));
  } else {
    *key = concurrency_key(user_scope);
  }
  if (!want_record) return true;
  const Datum max = SPI_getbinval(row, desc, SPI_fnumber(desc, "max_in_flight"), &isnull);
  if (isnull) return false;
  const Datum timeout = SPI_getbinval(row, desc, SPI_fnumber(desc, "lease_timeout"), &isnull);
  if (isnull) return false;
  *record = concurrency_record(DatumGetInt32(max), interval_to_micros(DatumGetIntervalP(timeout)));
  return true;
}

void collect_concurrency_limits(const ExtensionCatalog* ext, std::string_view user,
                                bool has_endpoint, std::string_view endpoint, ApplicableRules* out,
                                RuleView view) {
  out->concurrency_count = 0;
  if (!out->any || !OidIsValid(ext->concurrency_limits)) return;
  const bool from_sql = (view == RuleView::Transaction && own_rules_reload_pending()) ||
                        pg_atomic_read_u32(&ext->slot->rules_overflowed) != 0;
  if (from_sql) {
    read_limits(ext, user, has_endpoint, endpoint, out, view);
    return;
  }
  // No limit has reached the table (nor this transaction's overlay): an
  // installation without concurrency limits pays nothing for them.
  if (pg_atomic_read_u32(&ext->slot->has_concurrency_limits) == 0 &&
      !(view == RuleView::Transaction && has_own_rule_changes()))
    return;
  core::RuleRecord r;
  if (has_endpoint &&
      shared_record(concurrency_key(out->user_endpoint_scope), view, kConcurrencyKind, &r))
    add_limit(out, core::ScopeKind::UserEndpoint, out->user_endpoint_scope, r);
  if (shared_record(concurrency_key(out->user_scope), view, kConcurrencyKind, &r))
    add_limit(out, core::ScopeKind::User, out->user_scope, r);
}

void register_concurrency_limit_reset() { on_extension_catalog_reset(forget_plans); }

}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW on concurrency_limits:
// records the limit's change for the commit, like rate_limiter_rules_changed
// does for token and request limits.  FOR EACH STATEMENT (TRUNCATE): every
// rule of the installation reloads after the commit.
RL_SQL_FUNCTION(rate_limiter_concurrency_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("rate_limiter_concurrency_changed() must be called as a trigger")));
  require_shared_state();
  auto* td = reinterpret_cast<TriggerData*>(fcinfo->context);
  if (!TRIGGER_FIRED_FOR_ROW(td->tg_event)) {
    note_rules_reload();
    return PointerGetDatum(nullptr);
  }
  const ExtensionCatalog* ext = extension_catalog();
  TupleDesc desc = RelationGetDescr(td->tg_relation);
  if (TRIGGER_FIRED_BY_INSERT(td->tg_event)) {
    note_row_changed(ext, td->tg_trigtuple, desc, false);
  } else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
    note_row_changed(ext, td->tg_trigtuple, desc, true);
    note_row_changed(ext, td->tg_newtuple, desc, false);
  } else if (TRIGGER_FIRED_BY_DELETE(td->tg_event)) {
    note_row_changed(ext, td->tg_trigtuple, desc, true);
  }
  return PointerGetDatum(nullptr);
}
