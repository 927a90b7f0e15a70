// SQL-callable helpers for administration and the SQL-language functions of
// the install script: preload check, deferred counter resets, and reading
// one counter.  (The rule-change trigger is in rule_changes.cpp.)
#include <algorithm>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/api/counters_view.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

std::string_view text_view(text* t) {
  return std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

core::ScopeKind scope_arg(FunctionCallInfo fcinfo, int argno) {
  if (PG_ARGISNULL(argno))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("scope must not be NULL")));
  const char* s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
  if (strcmp(s, "user_endpoint") == 0) return core::ScopeKind::UserEndpoint;
  if (strcmp(s, "user") == 0 || strcmp(s, "default") == 0) return core::ScopeKind::User;
  if (strcmp(s, "endpoint") == 0) return core::ScopeKind::Endpoint;
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("unknown scope \"%s\"", s),
                  errhint("Use 'user_endpoint', 'user', 'endpoint' or 'default'.")));
  pg_unreachable();
}

// The counter scope named by (scope, user_id, api_endpoint); the arguments
// the scope needs must be present.
core::Hash128 counter_scope_args(FunctionCallInfo fcinfo) {
  const core::ScopeKind scope = scope_arg(fcinfo, 0);
  IdArg user, endpoint;
  if (scope != core::ScopeKind::Endpoint) user = required_id(fcinfo, 1, "user_id");
  if (scope != core::ScopeKind::User) {
    if (PG_ARGISNULL(2))
      ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                      errmsg("api_endpoint must not be NULL for this scope")));
    endpoint = required_id(fcinfo, 2, "api_endpoint");
  }
  return scope_of(extension_catalog(), scope, user.value, endpoint.value);
}

// The rule record of `kind` of the scope named by (scope, user_id,
// api_endpoint), 'default' meaning the default rule; false when none.
bool scope_rule_record(FunctionCallInfo fcinfo, const ExtensionCatalog* ext, core::LimitKind kind,
                       core::RuleRecord* out) {
  const char* s = text_to_cstring(PG_GETARG_TEXT_PP(0));
  core::ScopeKind scope = scope_arg(fcinfo, 0);
  if (strcmp(s, "default") == 0) scope = core::ScopeKind::Default;
  std::string_view user, endpoint;
  if (scope == core::ScopeKind::User || scope == core::ScopeKind::UserEndpoint) {
    text* u = PG_GETARG_TEXT_PP(1);
    user = std::string_view(VARDATA_ANY(u), VARSIZE_ANY_EXHDR(u));
  }
  if (scope == core::ScopeKind::UserEndpoint || scope == core::ScopeKind::Endpoint) {
    text* e = PG_GETARG_TEXT_PP(2);
    endpoint = std::string_view(VARDATA_ANY(e), VARSIZE_ANY_EXHDR(e));
  }
  ScopeRules rules;
  lookup_scope_rules(ext, scope, user, endpoint, scope_of(ext, scope, user, endpoint), &rules);
  const int k = static_cast<int>(kind);
  if (!rules.has[k]) return false;
  *out = rules.kind[k];
  return true;
}

core::LimitKind limit_kind_arg(FunctionCallInfo fcinfo, int argno) {
  if (PG_ARGISNULL(argno))
    ereport(ERROR,
            (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("limit_kind must not be NULL")));
  const char* s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
  if (strcmp(s, "tokens") == 0) return core::LimitKind::Tokens;
  if (strcmp(s, "requests") == 0) return core::LimitKind::Requests;
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("unknown limit_kind \"%s\"", s),
                  errhint("Use 'tokens' or 'requests'.")));
  pg_unreachable();
}

// The role names of the rate_limiter_counters view.
core::CounterRole role_arg(FunctionCallInfo fcinfo, int argno) {
  if (PG_ARGISNULL(argno))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("role must not be NULL")));
  const char* s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
  if (strcmp(s, "limit") == 0) return core::CounterRole::Main;
  if (strcmp(s, "emergency") == 0) return core::CounterRole::Emergency;
  if (strcmp(s, "burst_budget") == 0) return core::CounterRole::BurstBudget;
  if (strcmp(s, "burst_cap") == 0) return core::CounterRole::BurstCap;
  ereport(ERROR,
          (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("unknown counter role \"%s\"", s),
           errhint("Use 'limit', 'burst_cap', 'burst_budget' or 'emergency'.")));
  pg_unreachable();
}

// The reset of (scope, user_id, api_endpoint) at the limiter's clock, in
// rate_limit_resets (one row per scope: the latest reset).
void record_reset(FunctionCallInfo fcinfo) {
  const ExtensionCatalog* ext = extension_catalog();
  const char* scope = text_to_cstring(PG_GETARG_TEXT_PP(0));
  if (strcmp(scope, "default") == 0) scope = "user";  // the default counts in the user's counter
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  const char* sql = psprintf(
      "INSERT INTO %s.rate_limit_resets (scope, user_id, api_endpoint, reset_at) VALUES ($1, $2, "
      "$3, $4) "
      "ON CONFLICT (scope, user_id, api_endpoint) DO UPDATE SET reset_at = "
      "GREATEST(rate_limit_resets.reset_at, EXCLUDED.reset_at)",
      ext->quoted_schema);
  Oid types[4] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
  Datum values[4] = {CStringGetTextDatum(scope), PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1),
                     PG_ARGISNULL(2) ? (Datum)0 : PG_GETARG_DATUM(2),
                     TimestampTzGetDatum(unix_to_timestamptz(limiter_now_unix()))};
  const char nulls[4] = {' ', PG_ARGISNULL(1) ? 'n' : ' ', PG_ARGISNULL(2) ? 'n' : ' ', ' '};
  const int rc = SPI_execute_with_args(sql, 4, types, values, nulls, false, 0);
  if (rc != SPI_OK_INSERT)
    elog(ERROR, "rate_limiter: could not record the reset: %s", SPI_result_code_string(rc));
  SPI_finish();
  owner.restore();
}

}  // namespace
}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// Called by the install script: CREATE EXTENSION fails without the preload.
RL_SQL_FUNCTION(rate_limiter_require_preload) {
  require_shared_state();
  PG_RETURN_VOID();
}

// rate_limiter_schedule_reset(scope, user_id, api_endpoint): clears both
// counters (tokens and requests) of the scope when the transaction commits,
// and records the reset in rate_limit_resets in the same transaction, so
// that a rebuild after a crash does not count the usage rows it cleared
// (counter_recovery.hpp).
RL_SQL_FUNCTION(rate_limiter_schedule_reset) {
  require_shared_state();
  (void)counter_scope_args(fcinfo);  // validates the arguments
  record_reset(fcinfo);
  // The counters of the rules that apply now, as this transaction sees them
  // (a counter is keyed with its rule's shape, scope_key.hpp).
  const ExtensionCatalog* ext = extension_catalog();
  prepare_rule_lookups(ext);
  const core::ScopeKind scope = scope_arg(fcinfo, 0);
  const std::string_view user =
      PG_ARGISNULL(1) ? std::string_view() : text_view(PG_GETARG_TEXT_PP(1));
  const std::string_view endpoint =
      PG_ARGISNULL(2) ? std::string_view() : text_view(PG_GETARG_TEXT_PP(2));
  core::Hash128 keys[core::kLimitKinds];
  const int n = main_counter_keys(ext, scope, user, endpoint, RuleView::Transaction, keys);
  for (int i = 0; i < n; ++i) schedule_counter_reset(keys[i]);
  PG_RETURN_VOID();
}

// rate_limiter_counter_key(scope, user_id, api_endpoint, limit_kind, role)
//   -> text: the key of that counter in this installation, as
// rate_limiter_counter_slots() prints keys (counters_view.hpp).
RL_SQL_FUNCTION(rate_limiter_counter_key) {
  require_shared_state();
  const core::Hash128 scope = counter_scope_args(fcinfo);
  const core::LimitKind kind = limit_kind_arg(fcinfo, 3);
  const core::CounterRole role = role_arg(fcinfo, 4);
  // The limit's shape; without it (NULL), the key of no particular shape.
  if (PG_ARGISNULL(5) || PG_ARGISNULL(6))
    PG_RETURN_TEXT_P(counter_key_text(core::counter_key(scope, kind, role)));
  text* algorithm = PG_GETARG_TEXT_PP(5);
  core::Algorithm a = core::Algorithm::FixedWindow;
  if (!core::parse_algorithm(VARDATA_ANY(algorithm), VARSIZE_ANY_EXHDR(algorithm), &a))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("unknown algorithm")));
  const int64 window = std::clamp<int64>(interval_to_micros(PG_GETARG_INTERVAL_P(6)),
                                         core::kMinWindowMicros, core::kMaxWindowMicros);
  PG_RETURN_TEXT_P(
      counter_key_text(core::limit_key(scope, kind, static_cast<uint8>(a), window, role)));
}

// rate_limiter_peek_counter(scope, user_id, api_endpoint, limit_kind, window,
//                           algorithm, "limit", burst)
//   -> (used, remaining, window_start, reset_at)
// Reads one counter under a shared lock without changing it, as the rule
// (algorithm, limit, burst) sees it now.  A missing or expired counter
// reads as unused.  used = capacity - remaining; window_start is NULL for
// the bucket algorithms, which have no window.
RL_SQL_FUNCTION(rate_limiter_peek_counter) {
  require_shared_state();
  // An installation at an older version is refused here, as everywhere
  // (extension_catalog()).  Version 1.0 declared five arguments (no
  // algorithm, limit or burst): should its function still reach this one
  // (inside ALTER EXTENSION), reading arguments it did not pass would read
  // past the call's.
  (void)extension_catalog();
  if (PG_NARGS() < 8)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("this function of rate_limiter needs the extension's current version"),
                    errhint("Run ALTER EXTENSION rate_limiter UPDATE;")));
  const core::Hash128 scope = counter_scope_args(fcinfo);
  for (int arg = 3; arg <= 6; ++arg)
    if (PG_ARGISNULL(arg))
      ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                      errmsg("limit_kind, window, algorithm and limit must not be NULL")));
  const char* kind_text = text_to_cstring(PG_GETARG_TEXT_PP(3));
  core::LimitKind kind;
  if (strcmp(kind_text, "tokens") == 0)
    kind = core::LimitKind::Tokens;
  else if (strcmp(kind_text, "requests") == 0)
    kind = core::LimitKind::Requests;
  else
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown limit_kind \"%s\"", kind_text),
                    errhint("Use 'tokens' or 'requests'.")));
  core::LimitRule rule;
  rule.window_micros = interval_to_micros(PG_GETARG_INTERVAL_P(4));
  if (rule.window_micros < core::kMinWindowMicros || rule.window_micros > core::kMaxWindowMicros)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("window must be between 1 second and 3650 days")));
  text* algorithm = PG_GETARG_TEXT_PP(5);
  if (!core::parse_algorithm(VARDATA_ANY(algorithm), VARSIZE_ANY_EXHDR(algorithm), &rule.algorithm))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown algorithm \"%.*s\"",
                           // Clipped on a character boundary: a 1 MB argument must not
                           // become a 1 MB message.
                           pg_mbcliplen(VARDATA_ANY(algorithm),
                                        std::min<int>(VARSIZE_ANY_EXHDR(algorithm), 256), 64),
                           VARDATA_ANY(algorithm))));
  rule.limit = PG_GETARG_INT64(6);
  rule.burst = PG_ARGISNULL(7) ? 0 : PG_GETARG_INT64(7);
  if (rule.limit < 1 || rule.limit > core::kMaxQuantity || rule.burst < 0 ||
      rule.burst >= core::kMaxQuantity)
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("limit or burst out of range")));
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");

  // The rule comes in the arguments; only the counters must be complete
  // (which needs the rules loaded).
  const ExtensionCatalog* ext = extension_catalog();
  prepare_rule_lookups(ext);
  ensure_counters_recovered(ext);
  const core::Hash128 key =
      core::limit_key(scope, kind, static_cast<uint8>(rule.algorithm), rule.window_micros);
  const int64 now = limiter_now_unix();
  // A calendar period (calendar_rules.hpp) is counted as its period's
  // window: the rule's record says whether it is one.
  if (rule.algorithm == core::Algorithm::FixedWindow) {
    core::RuleRecord record;
    if (scope_rule_record(fcinfo, ext, kind, &record) &&
        record.window_micros == rule.window_micros &&
        record.algorithm == static_cast<uint8>(rule.algorithm) && is_calendar(record))
      rule = limit_rule_of(record, now);
  }
  PartitionSet set;
  set.add(core::partition_of(key, shared->geometry.partitions));
  if (!acquire_partitions(set, LW_SHARED, settings.lock_timeout_ms))
    ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                    errmsg("could not obtain a rate limiter lock within %d ms",
                           settings.lock_timeout_ms)));
  core::CounterState state;
  if (const core::CounterSlot* slot = counter_partition(set.ids[0]).find(key)) state = slot->state;
  release_partitions(set);

  state = core::advance(rule, state, now);
  const int64 remaining = core::available(rule, state, now);
  const bool windowed = rule.algorithm == core::Algorithm::FixedWindow ||
                        rule.algorithm == core::Algorithm::SlidingWindow;
  Datum values[4] = {Int64GetDatum(core::capacity(rule) - remaining), Int64GetDatum(remaining),
                     TimestampTzGetDatum(unix_to_timestamptz(state.window_start)),
                     TimestampTzGetDatum(unix_to_timestamptz(core::reset_at(rule, state, now)))};
  bool nulls[4] = {false, false, !windowed, false};
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}

// rate_limiter_schedule_refund(user_id, api_endpoint, tokens, charged_at):
// the refund of settle_tokens before version 1.3, which gave the tokens to
// the quotas that apply now, not those the grant charged (so it could
// return what was never charged: a limit added since, an emergency
// allowance, a counter reset since).  Those installations keep calling it
// until ALTER EXTENSION rate_limiter UPDATE; it now checks its arguments and
// gives nothing back, the one answer that is never too much.  Version 1.3
// settles in C (settle.cpp) from the charges the grant recorded.
RL_SQL_FUNCTION(rate_limiter_schedule_refund) {
  require_shared_state();
  (void)required_id(fcinfo, 0, "user_id");
  (void)optional_id(fcinfo, 1, "api_endpoint");
  if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                    errmsg("tokens and charged_at must not be NULL")));
  const int64 tokens = PG_GETARG_INT64(2);
  if (tokens < 1 || tokens > core::kMaxQuantity)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("tokens out of range")));
  PG_RETURN_VOID();
}
