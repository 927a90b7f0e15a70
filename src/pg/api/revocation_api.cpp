// SQL-callable functions of revocations: the trigger on token_revocations,
// is_token_revoked(), reload_revocations() and revocation_cache_status().
// revoke_token() and unrevoke_token() are SQL functions of the install
// script that write token_revocations; the trigger does the rest.
#include "rate_limiter/core/revocation_set.hpp"
#include "rate_limiter/pg/revocations.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

// The token of a token_revocations row; false when NULL (the primary key
// forbids it).
bool row_token(HeapTuple tuple, TupleDesc desc, int attno, std::string_view* token) {
  bool isnull = false;
  const Datum d = heap_getattr(tuple, attno, desc, &isnull);
  if (isnull) return false;
  text* t = DatumGetTextPP(d);
  *token = std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
  return true;
}

void record_row(RevocationChangeKind kind, const ExtensionCatalog* ext, HeapTuple tuple,
                TupleDesc desc, int attno) {
  std::string_view token;
  if (!row_token(tuple, desc, attno, &token)) return;
  record_revocation_change(kind, ext->installation,
                           core::revocation_key(shared->hash_key, ext->installation, token));
}

}  // namespace
}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// AFTER INSERT OR DELETE OR UPDATE OF token ... FOR EACH ROW, and AFTER
// TRUNCATE ... FOR EACH STATEMENT, on token_revocations: records the change
// for the commit (revocation_changes.hpp).
RL_SQL_FUNCTION(rate_limiter_revocations_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("rate_limiter_revocations_changed() must be called as a trigger")));
  require_shared_state();
  auto* trig = reinterpret_cast<TriggerData*>(fcinfo->context);
  const ExtensionCatalog* ext = extension_catalog();
  const TriggerEvent event = trig->tg_event;
  if (!TRIGGER_FIRED_FOR_ROW(event)) {
    // TRUNCATE, or a statement trigger someone added: reload from the table.
    record_revocation_change(RevocationChangeKind::Reload, ext->installation, core::Hash128{});
    return PointerGetDatum(nullptr);
  }
  TupleDesc desc = RelationGetDescr(trig->tg_relation);
  const int attno = SPI_fnumber(desc, "token");
  if (attno <= 0) elog(ERROR, "rate_limiter: token_revocations has no column \"token\"");
  if (TRIGGER_FIRED_BY_INSERT(event)) {
    record_row(RevocationChangeKind::Insert, ext, trig->tg_trigtuple, desc, attno);
  } else if (TRIGGER_FIRED_BY_DELETE(event)) {
    record_row(RevocationChangeKind::Delete, ext, trig->tg_trigtuple, desc, attno);
  } else if (TRIGGER_FIRED_BY_UPDATE(event)) {
    std::string_view before, after;
    const bool had = row_token(trig->tg_trigtuple, desc, attno, &before);
    const bool has = row_token(trig->tg_newtuple, desc, attno, &after);
    if (had && has && before == after) return PointerGetDatum(nullptr);  // only reason changed
    record_row(RevocationChangeKind::Delete, ext, trig->tg_trigtuple, desc, attno);
    record_row(RevocationChangeKind::Insert, ext, trig->tg_newtuple, desc, attno);
  }
  return PointerGetDatum(nullptr);
}

// is_token_revoked(token) -> boolean: what allocate_tokens would find for
// this session id, without counting anything.
RL_SQL_FUNCTION(is_token_revoked) {
  require_shared_state();
  const IdArg token = required_id(fcinfo, 0, "token");
  PG_RETURN_BOOL(session_revoked(token.value));
}

// reload_revocations(): the cache drops this installation's revocations at
// commit and loads them again on next use (after editing token_revocations
// with its triggers disabled).
RL_SQL_FUNCTION(reload_revocations) {
  require_shared_state();
  record_revocation_change(RevocationChangeKind::Reload, extension_catalog()->installation,
                           core::Hash128{});
  PG_RETURN_VOID();
}

// revocation_cache_status() -> (state, cached, cached_total, capacity)
RL_SQL_FUNCTION(revocation_cache_status) {
  require_shared_state();
  const uint64 installation = extension_catalog()->installation;
  const bool usable = revocation_cache_usable();
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");
  const RevocationCacheStatus s = revocation_cache_status(installation);
  Datum values[4] = {CStringGetTextDatum(usable ? s.state : "uncached"), Int64GetDatum(s.cached),
                     Int64GetDatum(s.cached_total), Int64GetDatum(s.capacity)};
  bool nulls[4] = {false, false, false, false};
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}
