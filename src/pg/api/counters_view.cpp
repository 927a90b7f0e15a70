// The C side of the rate_limiter_counters view: every live counter slot in
// shared memory, and the usage a slot's state amounts to under a rule.
//
// Shared memory holds keyed hashes, not user ids or endpoints, so these
// functions cannot say whose counter a slot is.  The view maps keys back
// to scopes in SQL: it computes the key of every candidate scope with
// rate_limiter_counter_key() (admin_api.cpp) and joins.  Slots do not record
// their installation either; keys of other databases match no candidate and
// are left out of the view.
#include <algorithm>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/pg/api/counters_view.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

text* counter_key_text(const core::Hash128& key) {
  char buf[33];
  snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(key.hi),
           static_cast<unsigned long long>(key.lo));
  return cstring_to_text(buf);
}

}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// rate_limiter_counter_slots() -> SETOF (key text, algorithm text,
//   window_micros bigint, "limit" bigint, state bytea)
// One row per live (not expired) slot of this installation (its tag).  The table is
// read one partition at a time under LW_SHARED: the occupied slots are
// copied into a local array allocated before the lock is taken, the lock is
// released, and only then are tuples built (tuple building allocates and
// can fail, which must not happen under an LWLock).  The result is a
// per-partition snapshot, not one instant of the whole table.
RL_SQL_FUNCTION(rate_limiter_counter_slots) {
  require_shared_state();
  const ExtensionCatalog* ext = extension_catalog();
  // EXECUTE is open to PUBLIC so that the view works for whoever may read
  // it (a view calls its functions as the querying role); the privilege
  // that guards the counters is SELECT on rate_limiter_counters.
  const Oid view = get_relname_relid("rate_limiter_counters", ext->schema);
  if (!OidIsValid(view) || pg_class_aclcheck(view, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied for the live counters"),
                    errhint("GRANT SELECT ON rate_limiter_counters TO the role that needs them.")));
  prepare_rule_lookups(ext);
  ensure_counters_recovered(ext);
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  const core::TableGeometry g = shared->geometry;
  auto* copy =
      static_cast<core::CounterSlot*>(palloc(sizeof(core::CounterSlot) * g.slots_per_partition));
  const int64 now = limiter_now_unix();
  for (uint32 p = 0; p < g.partitions; ++p) {
    PartitionSet set;
    set.add(p);
    if (!acquire_partitions(set, LW_SHARED, settings.lock_timeout_ms))
      ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                      errmsg("could not obtain a rate limiter lock within %d ms",
                             settings.lock_timeout_ms)));
    uint32 n = 0;
    // Bounded by the array length: a partition has slots_per_partition slots.
    counter_partition(p).for_each([&](const core::CounterSlot& s) {
      if (core::tag_of(s.key) == ext->tag) copy[n++] = s;
    });
    release_partitions(set);
    for (uint32 i = 0; i < n; ++i) {
      const core::CounterState& st = copy[i].state;
      if (core::state_expired(st, now)) continue;
      bytea* raw = static_cast<bytea*>(palloc(VARHDRSZ + sizeof st));
      SET_VARSIZE(raw, VARHDRSZ + sizeof st);
      memcpy(VARDATA(raw), &st, sizeof st);
      Datum values[5] = {
          PointerGetDatum(counter_key_text(copy[i].key)),
          CStringGetTextDatum(core::algorithm_name(static_cast<core::Algorithm>(st.algorithm))),
          Int64GetDatum(st.window_micros), Int64GetDatum(st.limit), PointerGetDatum(raw)};
      bool nulls[5] = {false, false, false, false, false};
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
  }
  pfree(copy);
  return (Datum)0;
}

// rate_limiter_counter_usage(state bytea, algorithm text, "limit" bigint,
//   window_duration interval, burst bigint)
//   -> (used, "limit", remaining, window_start, reset_at)
// What the state (from rate_limiter_counter_slots) amounts to now under the
// rule, exactly as rate_limiter_peek_counter reads it: core::advance(), then
// available() and capacity(), so it is right for all four algorithms.  A
// NULL algorithm, limit or window means the one the state was built for
// (right for the fixed-window emergency, burst-budget and burst-cap
// counters, whose rules are derived); burst NULL means 0.
RL_SQL_FUNCTION(rate_limiter_counter_usage) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("state must not be NULL")));
  bytea* raw = PG_GETARG_BYTEA_PP(0);
  core::CounterState state;
  if (VARSIZE_ANY_EXHDR(raw) != sizeof state)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("not a counter state")));
  memcpy(&state, VARDATA_ANY(raw), sizeof state);
  core::LimitRule rule;
  rule.algorithm = static_cast<core::Algorithm>(state.algorithm);
  rule.limit = state.limit;
  rule.window_micros = state.window_micros;
  if (!PG_ARGISNULL(1)) {
    text* algorithm = PG_GETARG_TEXT_PP(1);
    if (!core::parse_algorithm(VARDATA_ANY(algorithm), VARSIZE_ANY_EXHDR(algorithm),
                               &rule.algorithm))
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("unknown algorithm \"%.*s\"",
                             // Clipped on a character boundary: a 1 MB argument must not
                             // become a 1 MB message.
                             pg_mbcliplen(VARDATA_ANY(algorithm),
                                          std::min<int>(VARSIZE_ANY_EXHDR(algorithm), 256), 64),
                             VARDATA_ANY(algorithm))));
  }
  if (!PG_ARGISNULL(2)) rule.limit = PG_GETARG_INT64(2);
  if (!PG_ARGISNULL(3)) rule.window_micros = interval_to_micros(PG_GETARG_INTERVAL_P(3));
  rule.burst = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);
  if (rule.window_micros < core::kMinWindowMicros || rule.window_micros > core::kMaxWindowMicros ||
      rule.limit < 1 || rule.limit > core::kMaxQuantity || rule.burst < 0 ||
      rule.burst >= core::kMaxQuantity)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("rule out of range")));
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");
  const int64 now = limiter_now_unix();
  // A fixed window's state says its own window: a calendar period's
  // (calendar_rules.hpp) is not the nominal window the view passes.  The
  // key holds the nominal window, so for any other fixed window the two
  // are the same.
  if (rule.algorithm == core::Algorithm::FixedWindow &&
      state.algorithm == static_cast<uint8>(core::Algorithm::FixedWindow) &&
      state.window_micros != 0) {
    rule.window_micros = state.window_micros;
    rule.origin = state.window_start;
  }
  state = core::advance(rule, state, now);
  const int64 remaining = core::available(rule, state, now);
  const int64 capacity = core::capacity(rule);
  const bool windowed = rule.algorithm == core::Algorithm::FixedWindow ||
                        rule.algorithm == core::Algorithm::SlidingWindow;
  Datum values[5] = {Int64GetDatum(capacity - remaining), Int64GetDatum(capacity),
                     Int64GetDatum(remaining),
                     TimestampTzGetDatum(unix_to_timestamptz(state.window_start)),
                     TimestampTzGetDatum(unix_to_timestamptz(core::reset_at(rule, state, now)))};
  bool nulls[5] = {false, false, false, !windowed, false};
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}
