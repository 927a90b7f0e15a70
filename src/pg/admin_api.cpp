// SQL-callable helpers for administration and the SQL-language functions of
// the install script: preload check, rule-change trigger, deferred counter
// resets, and reading one counter.
#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/arguments.hpp"
#include "rate_limiter/pg/boundary.hpp"
#include "rate_limiter/pg/extension_catalog.hpp"
#include "rate_limiter/pg/hot_path.hpp"
#include "rate_limiter/pg/partition_locks.hpp"
#include "rate_limiter/pg/rule_cache.hpp"
#include "rate_limiter/pg/settings.hpp"
#include "rate_limiter/pg/shared_state.hpp"
#include "rate_limiter/pg/transaction_effects.hpp"

namespace rate_limiter::pg {
namespace {

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
  return core::scope_hash(shared->hash_key, extension_catalog()->installation, scope, user.value,
                          endpoint.value);
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

// Statement trigger on token_limits and request_limits.
RL_SQL_FUNCTION(rate_limiter_rules_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("rate_limiter_rules_changed() must be called as a trigger")));
  note_rule_change();
  return PointerGetDatum(nullptr);
}

// reload_rate_limits(): every backend reloads the rules after this
// transaction commits (for changes made with the triggers disabled).
RL_SQL_FUNCTION(reload_rate_limits) {
  require_shared_state();
  note_rule_change();
  PG_RETURN_VOID();
}

// rate_limiter_schedule_reset(scope, user_id, api_endpoint): clears both
// counters (tokens and requests) of the scope when the transaction commits.
RL_SQL_FUNCTION(rate_limiter_schedule_reset) {
  require_shared_state();
  const core::Hash128 scope = counter_scope_args(fcinfo);
  schedule_counter_reset(core::counter_key(scope, core::LimitKind::Tokens));
  schedule_counter_reset(core::counter_key(scope, core::LimitKind::Requests));
  PG_RETURN_VOID();
}

// rate_limiter_peek_counter(scope, user_id, api_endpoint, limit_kind, window)
//   -> (used, window_start, reset_at)
// Reads one counter under a shared lock without changing it.  A missing or
// expired counter reads as 0 in the current window.
RL_SQL_FUNCTION(rate_limiter_peek_counter) {
  require_shared_state();
  const core::Hash128 scope = counter_scope_args(fcinfo);
  if (PG_ARGISNULL(3) || PG_ARGISNULL(4))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                    errmsg("limit_kind and window must not be NULL")));
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
  const int64 window = interval_to_micros(PG_GETARG_INTERVAL_P(4));
  if (window < core::kMinWindowMicros || window > core::kMaxWindowMicros)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("window must be between 1 second and 3650 days")));
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");

  const core::Hash128 key = core::counter_key(scope, kind);
  const int64 now = limiter_now_unix();
  PartitionSet set;
  set.add(core::partition_of(key, shared->geometry.partitions));
  if (!acquire_partitions(set, LW_SHARED, settings.lock_timeout_ms))
    ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                    errmsg("could not obtain a rate limiter lock within %d ms",
                           settings.lock_timeout_ms)));
  core::CounterState state;
  if (const core::CounterSlot* slot = counter_partition(set.ids[0]).find(key)) state = slot->state;
  release_partitions(set);

  state = core::current_window(state, window, now);
  Datum values[3] = {Int64GetDatum(state.used),
                     TimestampTzGetDatum(unix_to_timestamptz(state.window_start)),
                     TimestampTzGetDatum(unix_to_timestamptz(state.window_start + state.window_micros))};
  bool nulls[3] = {false, false, false};
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}
