#include "rate_limiter/pg/revocations/revocation_lookup.hpp"

#include <algorithm>

#include "rate_limiter/core/revocation_set.hpp"
#include "rate_limiter/pg/revocations/revocation_cache.hpp"
#include "rate_limiter/pg/revocations/revocation_changes.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

// A load that keeps being overtaken by commits gives up after this many
// tries and asks the table for this call.
constexpr int kLoadAttempts = 3;

// Per backend, for the current installation; forgotten by any relcache
// invalidation of token_revocations (DROP, CREATE/ALTER/DROP TRIGGER, ...).
uint64 known_installation = 0;  // 0: recompute
Oid revocations_relid = InvalidOid;
bool triggers_present = false;

SPIPlanPtr lookup_plan = nullptr;
bool lookup_plan_stale = false;

void relcache_callback(Datum, Oid relid) {
  // Only plain flags here: invalidation callbacks must not fail.
  if (relid == InvalidOid || relid == revocations_relid) {
    known_installation = 0;
    if (lookup_plan != nullptr) lookup_plan_stale = true;
  }
}

// Makes the per-backend facts current for the installation.
void know_installation(const ExtensionCatalog* ext) {
  if (known_installation == ext->installation) return;
  const Oid relid = get_relname_relid("token_revocations", ext->schema);
  if (!OidIsValid(relid))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                    errmsg("rate_limiter table \"token_revocations\" is missing"),
                    errhint("Reinstall the extension: DROP EXTENSION rate_limiter; "
                            "CREATE EXTENSION rate_limiter;")));
  // Without both triggers (dropped by hand) commits would not reach the
  // cache, so it is not used at all.
  const bool present =
      OidIsValid(get_trigger_oid(relid, "rate_limiter_revocations_changed", true)) &&
      OidIsValid(get_trigger_oid(relid, "rate_limiter_revocations_truncated", true));
  revocations_relid = relid;
  triggers_present = present;
  if (lookup_plan != nullptr) lookup_plan_stale = true;  // the schema may differ
  known_installation = ext->installation;
}

std::string_view text_view(Datum d) {
  text* t = DatumGetTextPP(d);
  return std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

// Every revoked token of the installation, hashed, read with the latest
// snapshot (committed rows, whatever the transaction's isolation level).
// Returns a palloc'd array in the caller's memory context.
core::Hash128* read_revoked_keys(const ExtensionCatalog* ext, std::size_t* nkeys) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT token FROM %s.token_revocations", ext->quoted_schema);
  MemoryContext caller = CurrentMemoryContext;
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the revocation query");
  const int rc = SPI_execute_snapshot(plan, nullptr, nullptr, GetLatestSnapshot(), InvalidSnapshot,
                                      true, false, 0);
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: revocation query failed: %s", SPI_result_code_string(rc));
  const std::size_t n = SPI_processed;
  auto* keys = static_cast<core::Hash128*>(
      MemoryContextAllocHuge(caller, std::max<std::size_t>(n, 1) * sizeof(core::Hash128)));
  std::size_t kept = 0;
  for (std::size_t i = 0; i < n; ++i) {
    bool isnull = false;
    const Datum d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
    if (isnull) continue;  // the primary key forbids it
    keys[kept++] = core::revocation_key(shared->hash_key, ext->installation, text_view(d));
  }
  SPI_finish();
  owner.restore();
  *nkeys = kept;
  return keys;
}

// The slow path: asks token_revocations itself, with the latest snapshot
// (so, like the cache: other sessions' committed rows, and this
// transaction's own changes).
bool table_says_revoked(const ExtensionCatalog* ext, std::string_view token) {
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  if (lookup_plan != nullptr && lookup_plan_stale) {
    SPI_freeplan(lookup_plan);
    lookup_plan = nullptr;
    lookup_plan_stale = false;
  }
  if (lookup_plan == nullptr) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT 1 FROM %s.token_revocations WHERE token = $1",
             ext->quoted_schema);
    Oid types[1] = {TEXTOID};
    SPIPlanPtr plan = SPI_prepare(sql, 1, types);
    if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the revocation lookup");
    if (SPI_keepplan(plan) != 0) elog(ERROR, "rate_limiter: could not save the revocation lookup");
    lookup_plan = plan;
  }
  Datum values[1] = {
      PointerGetDatum(cstring_to_text_with_len(token.data(), static_cast<int>(token.size())))};
  const int rc = SPI_execute_snapshot(lookup_plan, values, nullptr, GetLatestSnapshot(),
                                      InvalidSnapshot, true, false, 1);
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: revocation lookup failed: %s", SPI_result_code_string(rc));
  const bool revoked = SPI_processed > 0;
  SPI_finish();
  owner.restore();
  return revoked;
}

// Loads the installation into the shared cache unless someone else did.
// When a commit overtakes the load, nothing is installed and the caller's
// next probe finds the installation still NotLoaded.
void load_installation(const ExtensionCatalog* ext) {
  uint64 generation = 0;
  if (!begin_revocation_load(ext->installation, &generation)) return;
  std::size_t n = 0;
  core::Hash128* keys = read_revoked_keys(ext, &n);
  if (settings.debug_revocation_load_delay_ms > 0)
    pg_usleep(static_cast<long>(settings.debug_revocation_load_delay_ms) * 1000L);
  finish_revocation_load(ext->installation, generation, keys, n);
  pfree(keys);
}

}  // namespace

bool revocation_cache_usable() {
  const ExtensionCatalog* ext = extension_catalog();
  know_installation(ext);
  return triggers_present && !RecoveryInProgress();
}

bool session_revoked(std::string_view token) {
  const ExtensionCatalog* ext = extension_catalog();
  if (!revocation_cache_usable()) return table_says_revoked(ext, token);

  const core::Hash128 key = core::revocation_key(shared->hash_key, ext->installation, token);
  bool touched = false;
  switch (pending_revocation(ext->installation, key, &touched)) {
    case PendingAnswer::Revoked:
      return true;
    case PendingAnswer::NotRevoked:
      return false;
    case PendingAnswer::AskTable:
      return table_says_revoked(ext, token);
    case PendingAnswer::None:
      break;
  }
  for (int attempt = 0; attempt < kLoadAttempts; ++attempt) {
    switch (probe_revocation_cache(ext->installation, key)) {
      case CacheAnswer::Revoked:
        return true;
      case CacheAnswer::NotRevoked:
        return false;
      case CacheAnswer::AskTable:
        return table_says_revoked(ext, token);
      case CacheAnswer::NotLoaded:
        break;
    }
    // This transaction's snapshots see its own uncommitted changes, which
    // must not reach the shared cache: let a later transaction load.
    if (touched) break;
    load_installation(ext);
  }
  return table_says_revoked(ext, token);
}

void register_revocations() {
  register_revocation_transaction_callbacks();
  CacheRegisterRelcacheCallback(relcache_callback, (Datum)0);
}

}  // namespace rate_limiter::pg
