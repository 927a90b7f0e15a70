// settle_tokens(allocation_id, tokens_used) -> (tokens_granted, tokens_refunded)
//
// Records the actual usage of a grant in its token_usage row and gives the
// unused part back, at commit, to exactly the token quotas the grant charged
// (token_usage.charges, grant_charges.hpp):
//   - each charged counter gets min(unused, what it was charged) back, into
//     the window the charge was counted in (a window that has ended is not
//     touched) or the part of a bucket charge that refill has not paid back
//     yet (core::refund());
//   - nothing goes back to a counter reset since the charge (its slot's
//     generation changed, or rate_limit_resets holds a later reset of the
//     scope), rebuilt after a crash, or changed to another limit, nor to a
//     quota that did not exist at the grant;
//   - the emergency allowance, the burst budget and burst caps are never
//     given back.
// The in-flight leases of the grant (concurrency limits, leases.hpp) end
// at the same commit, whoever settles and in whatever backend.
// A grant recorded before version 1.3 (no charges) is settled without a
// refund.  A grant that charged an ancestor's quota (parent_links.hpp)
// recorded the ancestor's id with the charge, so the refund reaches that
// counter even if the hierarchy changed since.
//
// Who may settle: the role that made the grant (token_usage.granted_to, the
// name of the current_user of the allocate_tokens call), its members, and the
// extension's administrators (superusers and members of the extension
// owner).  Grants recorded before 1.3 have no granted_to: administrators
// only.  Anyone else gets 42501 before anything about the grant is read out
// (its size, whether it was settled) and before its row is locked.
//
// Runs as the caller (a C function without SECURITY DEFINER, so that it
// knows who calls), and reads and writes token_usage as the extension owner
// (AsExtensionOwner: search_path pinned).
#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"

namespace rate_limiter::pg {
namespace {

struct GrantRow {
  bool found = false;
  bool is_grant = false;  // priority_level is set (a counted check is not a grant)
  Oid granted_to = InvalidOid;
  int64 tokens = 0;
  bool settled = false;
  TimestampTz settled_at = 0;
  TimestampTz at = 0;
  text* user = nullptr;
  text* endpoint = nullptr;  // nullptr: NULL
  bytea* charges = nullptr;  // nullptr: NULL
};

// One SELECT as the extension owner; `lock`: FOR UPDATE.  The result is
// copied into the caller's memory context.
GrantRow read_grant(const ExtensionCatalog* ext, int64 id, bool lock) {
  GrantRow g;
  MemoryContext caller = CurrentMemoryContext;
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  const char* sql = psprintf(
      "SELECT t.granted_to, t.tokens_used, t.settled_at, t.\"timestamp\", t.user_id, "
      "t.api_endpoint, t.charges, "
      "t.priority_level IS NOT NULL FROM %s.token_usage t WHERE t.id = $1%s",
      ext->quoted_schema, lock ? " FOR UPDATE" : "");
  Oid types[1] = {INT8OID};
  Datum values[1] = {Int64GetDatum(id)};
  if (SPI_execute_with_args(sql, 1, types, values, nullptr, false, 1) != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: could not read the allocation");
  if (SPI_processed == 1) {
    HeapTuple t = SPI_tuptable->vals[0];
    TupleDesc d = SPI_tuptable->tupdesc;
    bool isnull = false;
    g.found = true;
    // A role name (see the 1.3 update script): a role dropped or renamed
    // since is no one, and only administrators may settle.
    const Datum role = SPI_getbinval(t, d, 1, &isnull);
    g.granted_to = isnull ? InvalidOid : get_role_oid(NameStr(*DatumGetName(role)), true);
    const Datum tokens = SPI_getbinval(t, d, 2, &isnull);
    g.tokens = isnull ? 0 : DatumGetInt64(tokens);
    const Datum settled = SPI_getbinval(t, d, 3, &isnull);
    g.settled = !isnull;
    g.settled_at = isnull ? 0 : DatumGetTimestampTz(settled);
    g.at = DatumGetTimestampTz(SPI_getbinval(t, d, 4, &isnull));
    MemoryContext spi = MemoryContextSwitchTo(caller);
    const Datum user = SPI_getbinval(t, d, 5, &isnull);
    g.user = isnull ? nullptr : DatumGetTextPCopy(user);
    const Datum endpoint = SPI_getbinval(t, d, 6, &isnull);
    g.endpoint = isnull ? nullptr : DatumGetTextPCopy(endpoint);
    const Datum charges = SPI_getbinval(t, d, 7, &isnull);
    g.charges = isnull ? nullptr : DatumGetByteaPCopy(charges);
    MemoryContextSwitchTo(spi);
    g.is_grant = DatumGetBool(SPI_getbinval(t, d, 8, &isnull));
  }
  SPI_finish();
  owner.restore();
  return g;
}

// The rows of this session still waiting for commit (refund_on_abort) and
// those still queued: the grant may be one of them.
void flush_usage() {
  materialize_pending_usage();
  if (database_served()) wait_for_usage_flush(installation_index(extension_catalog()->slot));
}

bool may_settle(const ExtensionCatalog* ext, Oid caller, Oid granted_to) {
  if (superuser() || has_privs_of_role(caller, ext->owner)) return true;
  return OidIsValid(granted_to) && has_privs_of_role(caller, granted_to);
}

// Scopes of `user` (the grant's user, or an ancestor whose quota it
// charged) and the grant's endpoint with a reset recorded after the grant
// (rate_limit_resets), as a bit per core::ScopeKind.
uint32 scopes_reset_since(const ExtensionCatalog* ext, const GrantRow& g, text* user) {
  uint32 mask = 0;
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  const char* sql = psprintf(
      "SELECT r.scope FROM %s.rate_limit_resets r WHERE r.reset_at > $3 AND ("
      "(r.scope = 'user' AND r.user_id = $1 AND r.api_endpoint IS NULL) OR "
      "(r.scope = 'user_endpoint' AND r.user_id = $1 AND r.api_endpoint = $2) OR "
      "(r.scope = 'endpoint' AND r.user_id IS NULL AND r.api_endpoint = $2))",
      ext->quoted_schema);
  Oid types[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};
  Datum values[3] = {PointerGetDatum(user), PointerGetDatum(g.endpoint), TimestampTzGetDatum(g.at)};
  const char nulls[3] = {' ', g.endpoint == nullptr ? 'n' : ' ', ' '};
  if (SPI_execute_with_args(sql, 3, types, values, nulls, true, 0) != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: could not read rate_limit_resets");
  for (uint64 i = 0; i < SPI_processed; ++i) {
    bool isnull = false;
    const Datum scope = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
    if (isnull) continue;
    const char* name = TextDatumGetCString(scope);
    if (strcmp(name, "user") == 0)
      mask |= 1u << static_cast<int>(core::ScopeKind::User) |
              1u << static_cast<int>(core::ScopeKind::Default);
    else if (strcmp(name, "user_endpoint") == 0)
      mask |= 1u << static_cast<int>(core::ScopeKind::UserEndpoint);
    else if (strcmp(name, "endpoint") == 0)
      mask |= 1u << static_cast<int>(core::ScopeKind::Endpoint);
  }
  SPI_finish();
  owner.restore();
  return mask;
}

void mark_settled(const ExtensionCatalog* ext, int64 id, int64 granted, int64 used) {
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  const char* sql = psprintf(
      "UPDATE %s.token_usage t SET tokens_granted = $2, tokens_used = $3, settled_at = "
      "pg_catalog.clock_timestamp() "
      "WHERE t.id = $1",
      ext->quoted_schema);
  Oid types[3] = {INT8OID, INT8OID, INT8OID};
  Datum values[3] = {Int64GetDatum(id), Int64GetDatum(granted), Int64GetDatum(used)};
  if (SPI_execute_with_args(sql, 3, types, values, nullptr, false, 0) != SPI_OK_UPDATE ||
      SPI_processed != 1)
    elog(ERROR, "rate_limiter: could not settle the allocation");
  SPI_finish();
  owner.restore();
}

// Schedules, for commit, what each charged counter gets back.
void schedule_refunds(const ExtensionCatalog* ext, const GrantRow& g, int64 unused) {
  if (unused <= 0 || g.charges == nullptr) return;
  GrantCharge charges[kMaxGrantCharges];
  const int n = decode_grant_charges(VARDATA_ANY(g.charges), VARSIZE_ANY_EXHDR(g.charges), g.tokens,
                                     timestamptz_to_unix(g.at), charges);
  if (n <= 0) return;  // malformed or empty: nothing is known to have been charged
  const uint32 reset = scopes_reset_since(ext, g, g.user);
  const std::string_view user(VARDATA_ANY(g.user), VARSIZE_ANY_EXHDR(g.user));
  const std::string_view endpoint =
      g.endpoint != nullptr
          ? std::string_view(VARDATA_ANY(g.endpoint), VARSIZE_ANY_EXHDR(g.endpoint))
          : std::string_view();
  for (int i = 0; i < n; ++i) {
    const GrantCharge& c = charges[i];
    const bool ancestor = !c.owner.empty();
    // An ancestor's counter (parent_links.hpp): its resets are its own.
    const uint32 reset_of_owner =
        ancestor ? scopes_reset_since(
                       ext, g,
                       cstring_to_text_with_len(c.owner.data(), static_cast<int>(c.owner.size())))
                 : reset;
    if (reset_of_owner & (1u << static_cast<int>(c.scope))) continue;
    const int64 back = Min(unused, c.units);
    if (back <= 0) continue;
    // The counter the call charged: the scope as the rule lookup hashes it
    // (the default rule counts in the user's counter), keyed with the
    // limit's shape (rule_lookup.cpp, hot_path.cpp).
    const std::string_view owner_id = ancestor ? c.owner : user;
    core::Hash128 scope;
    switch (c.scope) {
      case core::ScopeKind::UserEndpoint:
        scope = scope_of(ext, core::ScopeKind::UserEndpoint, owner_id, endpoint);
        break;
      case core::ScopeKind::Endpoint:
        scope = scope_of(ext, core::ScopeKind::Endpoint, {}, endpoint);
        break;
      default:
        scope = scope_of(ext, core::ScopeKind::User, owner_id, {});
        break;
    }
    const core::Hash128 key =
        core::limit_key(scope, core::LimitKind::Tokens, static_cast<uint8>(c.rule.algorithm),
                        c.key_window, core::CounterRole::Main);
    schedule_refund_at_commit(key, c.rule, back, c.window, c.generation);
  }
}

[[noreturn]] void no_such_allocation(int64 id) {
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("allocation " INT64_FORMAT " does not exist", id),
                  errhint("allocation_id is the value allocate_tokens returned for a grant.")));
  pg_unreachable();
}

}  // namespace
}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

RL_SQL_FUNCTION(settle_tokens) {
  require_shared_state();
  if (PG_ARGISNULL(0))
    ereport(ERROR,
            (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("allocation_id must not be NULL")));
  if (PG_ARGISNULL(1))
    ereport(ERROR,
            (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("tokens_used must not be NULL")));
  const int64 id = PG_GETARG_INT64(0);
  const int64 used = PG_GETARG_INT64(1);
  if (used < 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("tokens_used must not be negative, not " INT64_FORMAT, used)));
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");
  const ExtensionCatalog* ext = extension_catalog();
  const Oid caller = GetUserId();

  // Unlocked first: who may settle never changes, and a role that may not
  // must not be able to hold the owner's row locked.
  GrantRow g = read_grant(ext, id, false);
  if (!g.found) {
    flush_usage();
    g = read_grant(ext, id, false);
  }
  if (!g.found || !g.is_grant) no_such_allocation(id);
  if (!may_settle(ext, caller, g.granted_to))
    ereport(
        ERROR,
        (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
         errmsg("permission denied to settle allocation " INT64_FORMAT, id),
         errdetail(
             OidIsValid(g.granted_to)
                 ? "Only the role that allocated it, its members and the extension's "
                   "administrators may settle an allocation."
                 : "No role that exists now made it (it was recorded before version 1.3, or its "
                   "role was dropped or renamed): only the extension's administrators may "
                   "settle it.")));
  g = read_grant(ext, id, true);
  if (!g.found) no_such_allocation(id);
  if (g.settled)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("allocation " INT64_FORMAT " is already settled", id),
                    errdetail("It was settled at %s.",
                              DatumGetCString(DirectFunctionCall1(
                                  timestamptz_out, TimestampTzGetDatum(g.settled_at))))));
  if (used > g.tokens)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("tokens_used (" INT64_FORMAT ") exceeds the " INT64_FORMAT
                           " tokens granted to allocation " INT64_FORMAT,
                           used, g.tokens, id)));
  mark_settled(ext, id, g.tokens, used);
  schedule_refunds(ext, g, g.tokens - used);
  // The grant's in-flight slots (leases.hpp) are free once this commits.
  release_grant_leases_at_commit(lease_grant_key(ext->installation, id));

  Datum values[2] = {Int64GetDatum(g.tokens), Int64GetDatum(g.tokens - used)};
  bool nulls[2] = {false, false};
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}
