// The hot-path SQL functions: allocate_tokens, check_rate_limit,
// enforce_rate_limit.
//
// Each runs in three phases (see boundary.hpp):
//   1. validate arguments, check a session_id against the revocations
//      (allocate_tokens) and make the rule cache current (may ereport);
//   2. decide_call(): locks and arithmetic only, noexcept;
//   3. raise errors, log the usage (usage_log.hpp), record metrics, build the
//      record.
#include "rate_limiter/core/priority.hpp"
#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/alerts.hpp"
#include "rate_limiter/pg/api/result_descriptor.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/revocations.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"

namespace rate_limiter::pg {
namespace {

#define ERRCODE_RATE_LIMIT_EXCEEDED MAKE_SQLSTATE('R', 'L', '4', '2', '9')
#define ERRCODE_COUNTER_TABLE_FULL MAKE_SQLSTATE('R', 'L', '5', '0', '7')

Datum interval_micros(int64 micros) {
  auto* iv = static_cast<Interval*>(palloc(sizeof(Interval)));
  iv->time = micros;
  iv->day = 0;
  iv->month = 0;
  return IntervalPGetDatum(iv);
}

// A window length in words, independent of IntervalStyle: "1 day",
// "7 days", "1 hour", "90 seconds", "1.5 seconds".
const char* window_words(int64 micros) {
  static const struct {
    int64 unit;
    const char* one;
    const char* many;
  } kUnits[] = {{USECS_PER_DAY, "day", "days"},
                {USECS_PER_HOUR, "hour", "hours"},
                {USECS_PER_MINUTE, "minute", "minutes"},
                {USECS_PER_SEC, "second", "seconds"}};
  for (const auto& u : kUnits)
    if (micros % u.unit == 0)
      return psprintf(INT64_FORMAT " %s", micros / u.unit, micros == u.unit ? u.one : u.many);
  return psprintf("%.6g seconds", static_cast<double>(micros) / USECS_PER_SEC);
}

struct Call {
  IdArg user;
  IdArg endpoint;
  IdArg session;
  CallInput input;
  ApplicableRules rules;
  CallResult result;
  bool refund_on_abort = false;
  uint32 effects_mark = 0;  // transaction_effects_mark() when the call began
  uint32 lease_mark = 0;    // release_leases_unless_bound(): until the grant has its id
  uint64 installation = 0;  // ExtensionCatalog::installation (the leases' grant keys)
  int64 now = 0;
  int64 started_ns = 0;
};

void schedule_charged_refunds(const Call& call) {
  if (call.result.status != CallStatus::Decided) return;
  // The in-flight slots follow the charges (leases.hpp).
  release_leases_on_abort(call.result.leases);
  for (int i = 0; i < call.result.charged_count; ++i) {
    const ChargedCounter& c = call.result.charged[i];
    schedule_refund_on_abort(c.key, c.rule, c.units, c.window, c.generation);
  }
}

// refund_on_abort: what this call charged goes back if the transaction (or
// the savepoint it ran in) rolls back.  Scheduling allocates, so it happens
// after the locks are gone; should it fail, the charge simply stays.
void schedule_abort_refunds(const Call& call) {
  if (call.refund_on_abort) schedule_charged_refunds(call);
}

// UsageRow::id_known: the grant's leases belong to its allocation from now
// on, before any other session can see (and settle) it.
void grant_id_known(void* context, int64 id) noexcept {
  Call& call = *static_cast<Call*>(context);
  if (call.result.leases.count == 0) return;
  bind_call_leases(call.result.leases, lease_grant_key(call.installation, id));
  leases_bound(call.lease_mark);
}

// UsageRow::follow_transaction: the call's usage row is about to be written
// in the caller's transaction, so its charge follows the transaction from
// now on, as with refund_on_abort (usage_log.hpp: a charge and its row
// live or die together).
void charge_follows_transaction(void* context) {
  const Call& call = *static_cast<const Call*>(context);
  schedule_charged_refunds(call);
  deferred_charges_follow_transaction(call.effects_mark);
}

// failure_mode = open after a lock wait ran out: the call is allowed
// without its counters, but bounded (fail_open.hpp: its priority share of
// each token quota's capacity less what other lockless grants on it still
// owe; all_or_nothing refuses a request above that), and what it was
// granted is charged to every applicable counter when the transaction
// ends (transaction_effects.hpp).  The usage row is written as for any
// grant.
void fail_open_grant(Call* call) {
  core::Hash128 keys[2 * core::kMaxAppliedLimits];
  core::LimitRule rules[2 * core::kMaxAppliedLimits];
  core::LimitKind kinds[2 * core::kMaxAppliedLimits];
  bool default_class[2 * core::kMaxAppliedLimits];
  const int n = applicable_counter_rules(call->rules, keys, rules, kinds, default_class,
                                         2 * core::kMaxAppliedLimits, call->now);
  const core::CallRequest& req = call->input.request;
  core::Hash128 token_keys[2 * core::kMaxAppliedLimits];
  int64 capacities[2 * core::kMaxAppliedLimits];
  int ntokens = 0;
  for (int i = 0; i < n; ++i) {
    if (kinds[i] != core::LimitKind::Tokens) continue;
    token_keys[ntokens] = keys[i];
    capacities[ntokens++] = core::capacity(rules[i]);
  }
  int64 reserved = 0;
  if (ntokens > 0 && req.kind == core::CallKind::Allocate) {
    const uint32 share = current_priority_shares().ppm[static_cast<int>(req.priority)];
    reserved = reserve_fail_open(token_keys, capacities, ntokens, share, req.tokens);
  }
  CallResult& r = call->result;
  r.fail_open = true;
  r.decision = core::decide_fail_open(req, ntokens > 0, reserved);
  const int64 granted = r.decision.granted;
  // What the decision did not take goes back to the ledger (all_or_nothing
  // refuses a partial reservation).
  if (reserved > granted)
    for (int i = 0; i < ntokens; ++i) settle_fail_open(token_keys[i], reserved - granted);
  if (!r.decision.allowed()) return;
  for (int i = 0; i < n; ++i) {
    const int64 units = kinds[i] == core::LimitKind::Tokens ? granted : 1;
    if (units <= 0) continue;
    schedule_deferred_charge(keys[i], rules[i], units, kinds[i] == core::LimitKind::Tokens,
                             default_class[i] ? call->input.default_class : core::Admission{},
                             call->refund_on_abort);
  }
}

// Phases 1 and 2 for every hot-path function, and the error half of phase 3.
void run_call(Call* call) {
  const ExtensionCatalog* ext = extension_catalog();
  call->effects_mark = transaction_effects_mark();
  prepare_rule_lookups(ext);
  ensure_counters_recovered(ext);
  call->input.user = call->user.value;
  call->input.has_endpoint = call->endpoint.present;
  call->input.endpoint = call->endpoint.value;
  collect_applicable_rules(ext, call->input.user, call->input.has_endpoint, call->input.endpoint,
                           &call->rules);
  // Only a grant takes in-flight slots: the other calls need not look.
  if (call->input.request.kind == core::CallKind::Allocate)
    collect_concurrency_limits(ext, call->input.user, call->input.has_endpoint,
                               call->input.endpoint, &call->rules);
  call->input.rules = &call->rules;
  call->input.lease_group = ext->tag;
  call->installation = ext->installation;
  if (call->rules.concurrency_count > 0 && call->input.request.kind == core::CallKind::Allocate) {
    ensure_lease_exit_hook();
    reserve_lease_effects();
  }
  if (call->rules.fallback.has[0] || call->rules.fallback.has[1])
    call->input.default_class = key_admission(true);
  call->now = limiter_now_unix();

  decide_call(call->input, call->now, &call->result);
  // First thing after the locks (room reserved above, so it cannot fail):
  // until the grant has its id, an error ends its in-flight slots.
  if (call->result.status == CallStatus::Decided)
    call->lease_mark = release_leases_unless_bound(call->result.leases);
  // Before any error below: a refused call (RL507) raises its alert too.
  raise_call_alerts(call->input, call->result, call->now);

  SharedMetrics& m = shared->metrics;
  switch (call->result.status) {
    case CallStatus::Decided:
      break;
    case CallStatus::LockTimeout:
      metric_add(&m.lock_timeouts);
      if (settings.failure_mode == kFailOpen) {
        // Allowed without the lock, but bounded and counted (fail_open_grant()).
        metric_add(&m.fail_open);
        raise_degradation_alert(AlertKind::FailOpen, call->now);
        fail_open_grant(call);
        break;
      }
      metric_add(&m.fail_closed);
      ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                      errmsg("could not obtain a rate limiter lock within %d ms",
                             settings.lock_timeout_ms),
                      errdetail("Nothing was charged."),
                      errhint("Retry, or raise rate_limiter.lock_timeout.")));
      break;
    case CallStatus::TableFull:
      metric_add(&m.fail_closed);
      if (call->result.refusal == core::AcquireStatus::OwnerFull) {
        metric_add(&m.key_refusals);
        const char* role = GetUserNameFromId(GetUserId(), true);
        ereport(
            ERROR,
            (errcode(ERRCODE_COUNTER_TABLE_FULL),
             errmsg("role \"%s\" holds its whole share of the rate limiter counter table",
                    role != nullptr ? role : "?"),
             errdetail("A role may hold at most %u counters of users under the default rule "
                       "in each of the %u partitions (rate_limiter.role_key_share = %g). "
                       "Nothing was charged.",
                       role_cap(shared->geometry.capacity_per_partition),
                       shared->geometry.partitions, settings.role_key_share),
             errhint("Counters free up as their windows end.  A superuser can raise the share "
                     "of a trusted role: ALTER ROLE ... SET rate_limiter.role_key_share = 1.")));
      }
      if (call->result.refusal == core::AcquireStatus::ClassFull)
        ereport(
            ERROR,
            (errcode(ERRCODE_COUNTER_TABLE_FULL),
             errmsg("rate limiter counters for users under the default rule are used up"),
             errdetail("The rest of the table (rate_limiter.configured_key_reserve = %g) is kept "
                       "for users and endpoints with a rule of their own. Nothing was charged.",
                       settings.configured_key_reserve),
             errhint("Counters free up as their windows end.  Raise rate_limiter.max_keys "
                     "(takes a restart), or lower rate_limiter.configured_key_reserve.")));
      ereport(ERROR,
              (errcode(ERRCODE_COUNTER_TABLE_FULL), errmsg("rate limiter counter table is full"),
               errdetail("All %zu counters hold live windows; none could be evicted. "
                         "Nothing was charged.",
                         shared->geometry.total_capacity()),
               errhint("Raise rate_limiter.max_keys (takes a restart), or set "
                       "rate_limiter.failure_mode = 'open' to allow such calls.")));
      break;
  }
  if (call->result.fail_open && call->result.status == CallStatus::Decided &&
      call->result.decision.allowed())
    metric_add(&m.fail_open);
  if (call->result.status == CallStatus::Decided && call->result.decision.shadowed &&
      !core::outcome_allows(call->result.decision.shadow_outcome))
    metric_add(&m.shadow_denials);
  schedule_abort_refunds(*call);
}

void start_call(FunctionCallInfo fcinfo, Call* call, int user_arg, int endpoint_arg) {
  call->started_ns = monotonic_ns();
  require_shared_state();
  call->user = required_id(fcinfo, user_arg, "user_id");
  call->endpoint = optional_id(fcinfo, endpoint_arg, "api_endpoint");
}

Datum nullable_int8(int64 v, bool* isnull) {
  *isnull = v < 0;
  return Int64GetDatum(v < 0 ? 0 : v);
}

// limit_owner of the binding limit (hot_path.hpp), NULL without one.
Datum owner_datum(const Call& call, bool* isnull) {
  const DecidedLimit* b = call.result.binding();
  const std::string_view owner = b != nullptr ? limit_owner(call.input, *b) : std::string_view();
  *isnull = owner.empty();
  return owner.empty() ? (Datum)0
                       : PointerGetDatum(cstring_to_text_with_len(owner.data(),
                                                                  static_cast<int>(owner.size())));
}

// check_rate_limit / enforce_rate_limit record:
//   (allowed, "limit", remaining, reset_at, retry_after, limit_kind, scope, reason)
Datum check_record(FunctionCallInfo fcinfo, const Call& call) {
  const core::Decision& d = call.result.decision;
  const DecidedLimit* b = call.result.binding();
  const bool none = b == nullptr;
  const DecidedLimit shown = none ? DecidedLimit{} : *b;  // read only where not null
  Datum values[9];
  bool nulls[9] = {false, none, none, none, d.retry_after <= 0, none, none, false, true};
  values[0] = BoolGetDatum(d.allowed());
  values[1] = Int64GetDatum(shown.capacity());
  values[2] = Int64GetDatum(d.binding_remaining);
  values[3] = TimestampTzGetDatum(unix_to_timestamptz(d.reset_at));
  values[4] = d.retry_after > 0 ? interval_micros(d.retry_after) : (Datum)0;
  values[5] = CStringGetTextDatum(limit_kind_name(shown));
  values[6] = CStringGetTextDatum(scope_name(shown.scope));
  values[7] = CStringGetTextDatum(call.result.status == CallStatus::LockTimeout
                                      ? "fail_open_lock_timeout"
                                      : reason_of(call.result, core::CallKind::Check));
  values[8] = owner_datum(call, &nulls[8]);
  HeapTuple tuple = heap_form_tuple(result_descriptor(fcinfo), values, nulls);
  return HeapTupleGetDatum(tuple);
}

Datum check_or_enforce(FunctionCallInfo fcinfo, bool enforce) {
  Call call;
  start_call(fcinfo, &call, 0, 1);
  call.session = optional_id(fcinfo, 2, "session_id");
  call.input.request.kind = core::CallKind::Check;
  call.refund_on_abort = settings.refund_on_abort;
  require_writable_transaction();
  // As in allocate_tokens: a revoked session is denied before any lock.
  const bool revoked = call.session.present && session_revoked(call.session.value);
  if (revoked)
    call.result.decision.outcome = core::Outcome::DeniedRevoked;
  else
    run_call(&call);

  const core::Decision& d = call.result.decision;
  if (d.allowed()) {
    UsageRow row{&call.user,
                 &call.endpoint,
                 &call.session,
                 0,
                 kNoPriority,
                 unix_to_timestamptz(call.now),
                 charge_follows_transaction,
                 &call};
    log_usage(row, call.refund_on_abort);
  }
  record_decision(d.allowed(), call.started_ns);
  // Before enforce_rate_limit raises: a denial is logged too.
  if (log_decisions_enabled())
    log_decision(enforce ? "enforce_rate_limit" : "check_rate_limit", call.user, call.endpoint,
                 call.result, core::CallKind::Check, -1);

  if (enforce && revoked)
    ereport(
        ERROR,
        (errcode(ERRCODE_RATE_LIMIT_EXCEEDED),
         errmsg("session \"%s\" is revoked", text_to_cstring(call.session.datum)),
         errdetail("Reason: revoked.  Retrying does not help until the session is unrevoked.")));
  if (enforce && !d.allowed()) {
    const DecidedLimit b =
        call.result.binding() != nullptr ? *call.result.binding() : DecidedLimit{};
    ereport(
        ERROR,
        (errcode(ERRCODE_RATE_LIMIT_EXCEEDED),
         call.endpoint.present
             ? errmsg("rate limit exceeded for user \"%s\" on endpoint \"%s\"",
                      text_to_cstring(call.user.datum), text_to_cstring(call.endpoint.datum))
             : errmsg("rate limit exceeded for user \"%s\"", text_to_cstring(call.user.datum)),
         errdetail(
             "Limit: " INT64_FORMAT " %s per %s (%s scope%s%s%s); remaining: " INT64_FORMAT ".",
             b.capacity(),
             b.burst_cap ? (b.kind == core::LimitKind::Tokens ? "burst tokens" : "burst requests")
                         : kind_name(b.kind),
             // A calendar period's window is its own length (calendar_rules.hpp).
             b.rule.origin != core::kWindowOriginMicros
                 ? psprintf("calendar period (%s this period)", window_words(b.rule.window_micros))
                 : window_words(b.rule.window_micros),
             scope_name(b.scope), b.owner_level > 0 ? " of \"" : "",
             b.owner_level > 0 && b.owner_id != nullptr ? b.owner_id : "",
             b.owner_level > 0 ? "\"" : "", d.binding_remaining),
         d.outcome == core::Outcome::DeniedExceedsCapacity
             ? errhint(
                   "Retrying cannot succeed: the largest priority share of this limit is less than "
                   "one token. Raise the limit or rate_limiter.priority_share_high.")
             : errhint("Retry after %.3f seconds.",
                       static_cast<double>(d.retry_after) / USECS_PER_SEC)));
  }
  return check_record(fcinfo, call);
}

}  // namespace
}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// allocate_tokens(user_id, tokens_requested, priority_level, api_endpoint,
//                 session_id, context)
//   -> (success, tokens_allocated, tokens_remaining, allocation_strategy,
//       reason, "limit", reset_at, retry_after, requests_remaining,
//       limit_kind, scope, allocation_id, burst_tokens, emergency_tokens)
RL_SQL_FUNCTION(allocate_tokens) {
  Call call;
  start_call(fcinfo, &call, 0, 3);
  call.input.request.kind = core::CallKind::Allocate;
  call.input.request.tokens = token_count(fcinfo, 1, "tokens_requested");
  call.input.request.priority = priority_arg(fcinfo, 2);
  call.session = optional_id(fcinfo, 4, "session_id");
  const CallOptions context = context_arg(fcinfo, 5);
  call.input.request.all_or_nothing = context.all_or_nothing;
  call.input.request.burst_mode = context.burst_mode;
  call.input.request.emergency = context.emergency_override;
  call.refund_on_abort = context.refund_on_abort || settings.refund_on_abort;
  if (context.emergency_override) require_emergency_privilege();
  require_writable_transaction();
  // A revoked session is denied before any lock: nothing charged, no
  // binding limit, no usage row.
  if (call.session.present && session_revoked(call.session.value))
    call.result.decision.outcome = core::Outcome::DeniedRevoked;
  else
    run_call(&call);

  const core::Decision& d = call.result.decision;
  const DecidedLimit* b = call.result.binding();
  const bool none = b == nullptr;
  const DecidedLimit shown = none ? DecidedLimit{} : *b;  // read only where not null
  int64 allocation_id = -1;
  if (d.allowed()) {
    UsageRow row{&call.user,
                 &call.endpoint,
                 &call.session,
                 d.granted,
                 static_cast<int>(call.input.request.priority),
                 unix_to_timestamptz(call.now),
                 charge_follows_transaction,
                 &call};
    // What settle_tokens may give back, quota by quota (grant_charges.hpp).
    char charges[kMaxGrantChargesBytes];
    row.charges_len = encode_grant_charges(call.result, d.granted, call.now, charges);
    if (row.charges_len > 0) row.charges = charges;
    row.id_known = grant_id_known;
    allocation_id = log_usage(row, call.refund_on_abort);
    SharedMetrics& m = shared->metrics;
    if (d.burst_tokens > 0) metric_add(&m.burst_allocations);
    if (d.strategy == core::Strategy::Emergency) metric_add(&m.emergency_overrides);
  }
  record_decision(d.allowed(), call.started_ns);
  if (log_decisions_enabled())
    log_decision("allocate_tokens", call.user, call.endpoint, call.result, core::CallKind::Allocate,
                 call.input.request.tokens);

  Datum values[15];
  bool nulls[15] = {false, false, false, false, false, none,  none, d.retry_after <= 0,
                    false, none,  none,  false, false, false, true};
  values[0] = BoolGetDatum(d.allowed());
  values[1] = Int64GetDatum(d.granted);
  values[2] = nullable_int8(d.tokens_remaining, &nulls[2]);
  values[3] = CStringGetTextDatum(strategy_name(d.strategy));
  values[4] = CStringGetTextDatum(call.result.status == CallStatus::LockTimeout
                                      ? "fail_open_lock_timeout"
                                      : reason_of(call.result, core::CallKind::Allocate));
  values[5] = Int64GetDatum(shown.capacity());
  values[6] = TimestampTzGetDatum(unix_to_timestamptz(d.reset_at));
  values[7] = d.retry_after > 0 ? interval_micros(d.retry_after) : (Datum)0;
  values[8] = nullable_int8(d.requests_remaining, &nulls[8]);
  values[9] = CStringGetTextDatum(limit_kind_name(shown));
  values[10] = CStringGetTextDatum(scope_name(shown.scope));
  values[11] = nullable_int8(allocation_id, &nulls[11]);
  values[12] = Int64GetDatum(d.burst_tokens);
  values[13] = Int64GetDatum(d.emergency_units);
  values[14] = owner_datum(call, &nulls[14]);
  HeapTuple tuple = heap_form_tuple(result_descriptor(fcinfo), values, nulls);
  return HeapTupleGetDatum(tuple);
}

// check_rate_limit(user_id, api_endpoint): counts the request when allowed.
RL_SQL_FUNCTION(check_rate_limit) { return check_or_enforce(fcinfo, false); }

// enforce_rate_limit(user_id, api_endpoint): as check_rate_limit, but raises
// RL429 when denied.
RL_SQL_FUNCTION(enforce_rate_limit) { return check_or_enforce(fcinfo, true); }
