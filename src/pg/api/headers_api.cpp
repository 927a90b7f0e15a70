// rate_limiter_preview_decision(user_id, api_endpoint, tokens): the decision
// a call would get now, without charging anything (hot_path.hpp,
// preview_call()).  rate_limit_headers() (sql/rate_limiter--1.3--1.4.sql)
// builds the HTTP headers from it and from get_rate_limit_status(): the
// binding limit first, and Retry-After from the exact retry_after of the
// limit's algorithm and strategies.
//
// Phases as in sql_api.cpp: arguments and rule lookups (may ereport), then
// preview_call() (shared locks, arithmetic only), then the record.
#include "rate_limiter/pg/api/result_descriptor.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

using namespace rate_limiter;
using namespace rate_limiter::pg;

namespace {

// Plain data only: this frame can ereport.
struct Preview {
  IdArg user;
  IdArg endpoint;
  CallInput input;
  ApplicableRules rules;
  CallResult result;
};

Datum micros_interval(int64 micros) {
  auto* iv = static_cast<Interval*>(palloc0(sizeof(Interval)));
  iv->time = micros;
  return IntervalPGetDatum(iv);
}

}  // namespace

// -> (allowed, "limit", remaining, reset_at, retry_after, limit_kind, scope,
//     reason, algorithm, window_duration, checked_at)
// tokens NULL: a check (check_rate_limit); else allocate_tokens(user_id,
// tokens) with its defaults: medium priority, partial grants allowed, no
// strategy flags.  remaining is the binding limit's after the call would
// have been charged, as in the result records.
RL_SQL_FUNCTION(rate_limiter_preview_decision) {
  Preview p;
  require_shared_state();
  p.user = required_id(fcinfo, 0, "user_id");
  p.endpoint = optional_id(fcinfo, 1, "api_endpoint");
  if (PG_ARGISNULL(2)) {
    p.input.request.kind = core::CallKind::Check;
  } else {
    p.input.request.kind = core::CallKind::Allocate;
    p.input.request.tokens = token_count(fcinfo, 2, "tokens");
    p.input.request.priority = core::Priority::Medium;
  }
  const ExtensionCatalog* ext = extension_catalog();
  prepare_rule_lookups(ext);
  ensure_counters_recovered(ext);
  p.input.user = p.user.value;
  p.input.has_endpoint = p.endpoint.present;
  p.input.endpoint = p.endpoint.value;
  collect_applicable_rules(ext, p.input.user, p.input.has_endpoint, p.input.endpoint, &p.rules);
  p.input.rules = &p.rules;
  const int64 now = limiter_now_unix();

  preview_call(p.input, now, &p.result);
  if (p.result.status == CallStatus::LockTimeout)
    ereport(ERROR,
            (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
             errmsg("could not obtain a rate limiter lock within %d ms", settings.lock_timeout_ms),
             errhint("Retry, or raise rate_limiter.lock_timeout.")));

  TupleDesc desc = result_descriptor(fcinfo);
  const core::Decision& d = p.result.decision;
  const DecidedLimit* b = p.result.binding();
  const bool none = b == nullptr;
  const DecidedLimit shown = none ? DecidedLimit{} : *b;  // read only where not null
  Datum values[12];
  bool nulls[12] = {false, none, none,  none, d.retry_after <= 0, none, none, false,
                    none,  none, false, true};
  values[0] = BoolGetDatum(d.allowed());
  values[1] = Int64GetDatum(shown.capacity());
  values[2] = Int64GetDatum(d.binding_remaining);
  values[3] = TimestampTzGetDatum(unix_to_timestamptz(d.reset_at));
  values[4] = d.retry_after > 0 ? micros_interval(d.retry_after) : (Datum)0;
  values[5] = CStringGetTextDatum(limit_kind_name(shown));
  values[6] = CStringGetTextDatum(scope_name(shown.scope));
  values[7] = CStringGetTextDatum(reason_of(p.result, p.input.request.kind));
  values[8] = CStringGetTextDatum(core::algorithm_name(shown.rule.algorithm));
  values[9] = micros_interval(shown.rule.window_micros);
  // The instant of the decision (the limiter's clock, rate_limiter.debug_clock
  // included): what reset_at and retry_after count from.
  values[10] = TimestampTzGetDatum(unix_to_timestamptz(now));
  const std::string_view owner = none ? std::string_view() : limit_owner(p.input, shown);
  nulls[11] = owner.empty();
  values[11] =
      owner.empty()
          ? (Datum)0
          : PointerGetDatum(cstring_to_text_with_len(owner.data(), static_cast<int>(owner.size())));
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}
