#include "rate_limiter/pg/workers/upkeep.hpp"

#include "rate_limiter/pg/workers/reclaim.hpp"

#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

// A flushed (user_id, api_endpoint) pair, keyed by two independent hashes
// of its bytes (a collision only skips one refresh).  The strings live in
// scope_context; an entry whose copy failed half way has user == nullptr.
struct ScopeKey {
  uint64 hash[2];
};
struct ScopeEntry {
  ScopeKey key;
  char* user;
  char* endpoint;  // nullptr: NULL
  int16 user_len;
  int16 endpoint_len;
};

MemoryContext scope_context = nullptr;
HTAB* scopes = nullptr;

void reset_scopes() {
  if (scope_context == nullptr)
    scope_context = AllocSetContextCreate(TopMemoryContext, "rate_limiter flushed scopes",
                                          ALLOCSET_DEFAULT_SIZES);
  else
    MemoryContextReset(scope_context);
  HASHCTL ctl;
  memset(&ctl, 0, sizeof ctl);
  ctl.keysize = sizeof(ScopeKey);
  ctl.entrysize = sizeof(ScopeEntry);
  ctl.hcxt = scope_context;
  scopes =
      hash_create("rate_limiter flushed scopes", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

ScopeKey key_of(const UsageEvent& e) {
  // [user_len][user][endpoint_len or -1][endpoint]: unambiguous.
  unsigned char bytes[2 * sizeof(int16) + 2 * core::kMaxIdBytes];
  Size n = 0;
  const int16 user_len = static_cast<int16>(e.user_len);
  const int16 endpoint_len = static_cast<int16>(e.endpoint != nullptr ? e.endpoint_len : -1);
  memcpy(bytes + n, &user_len, sizeof user_len);
  n += sizeof user_len;
  memcpy(bytes + n, e.user, e.user_len);
  n += e.user_len;
  memcpy(bytes + n, &endpoint_len, sizeof endpoint_len);
  n += sizeof endpoint_len;
  if (e.endpoint != nullptr) {
    memcpy(bytes + n, e.endpoint, e.endpoint_len);
    n += e.endpoint_len;
  }
  ScopeKey key;
  key.hash[0] = hash_bytes_extended(bytes, static_cast<int>(n), 0x72617465);
  key.hash[1] = hash_bytes_extended(bytes, static_cast<int>(n), 0x6c696d69);
  return key;
}

char* copy_of(const char* bytes, int length) {
  char* copy = static_cast<char*>(MemoryContextAlloc(scope_context, Max(length, 1)));
  memcpy(copy, bytes, length);
  return copy;
}

// One transaction: the snapshot of up to kUpkeepBatchScopes noted pairs.
// False when there was nothing to do or it cannot be done.
bool snapshot_batch(const WorkerTarget& target, bool* gone) {
  if (scopes == nullptr || hash_get_num_entries(scopes) == 0) return false;
  const int n =
      static_cast<int>(Min(hash_get_num_entries(scopes), static_cast<long>(kUpkeepBatchScopes)));
  // Outside the transaction: the keys are removed after its commit.
  ScopeKey* keys = static_cast<ScopeKey*>(palloc(n * sizeof(ScopeKey)));
  begin_worker_transaction("rate_limiter: upkeep of flushed scopes");
  const ExtensionCatalog* ext = worker_catalog(target, gone);
  Oid types[2] = {TEXTARRAYOID, TEXTARRAYOID};
  if (ext == nullptr) {
    // Gone, or not at the library's version: nothing to refresh.
    commit_worker_transaction();
    reset_scopes();
    return false;
  }
  Datum* users = static_cast<Datum*>(palloc(n * sizeof(Datum)));
  Datum* endpoints = static_cast<Datum*>(palloc(n * sizeof(Datum)));
  bool* user_nulls = static_cast<bool*>(palloc0(n * sizeof(bool)));
  bool* endpoint_nulls = static_cast<bool*>(palloc0(n * sizeof(bool)));
  int rows = 0;
  int taken = 0;
  HASH_SEQ_STATUS scan;
  hash_seq_init(&scan, scopes);
  while (ScopeEntry* entry = static_cast<ScopeEntry*>(hash_seq_search(&scan))) {
    keys[taken++] = entry->key;
    if (entry->user != nullptr) {
      users[rows] = PointerGetDatum(cstring_to_text_with_len(entry->user, entry->user_len));
      endpoints[rows] = text_or_null(entry->endpoint, entry->endpoint_len, &endpoint_nulls[rows]);
      ++rows;
    }
    if (taken == n) {
      hash_seq_term(&scan);
      break;
    }
  }
  if (rows > 0) {
    Datum args[2] = {array_of(users, user_nulls, rows, TEXTOID),
                     array_of(endpoints, endpoint_nulls, rows, TEXTOID)};
    AsExtensionOwner owner(ext);
    const int rc = SPI_execute_with_args(
        psprintf("SELECT %s.rate_limiter_snapshot_scopes($1, $2)", ext->quoted_schema), 2, types,
        args, nullptr, false, 0);
    if (rc != SPI_OK_SELECT) elog(ERROR, "rate_limiter worker: snapshot of flushed scopes failed");
    owner.restore();
  }
  commit_worker_transaction();
  for (int i = 0; i < taken; ++i) hash_search(scopes, &keys[i], HASH_REMOVE, nullptr);
  pfree(keys);
  // Emptied: give the strings back too.
  if (hash_get_num_entries(scopes) == 0) reset_scopes();
  return true;
}

// Inside the transaction: 2 x the longest replay horizon of the
// installation's rules or the burst budget window, in seconds; false while
// the installation's rules are not loaded (the horizon is then unknown) and
// cannot be loaded now.
bool kept_span_seconds(const ExtensionCatalog* ext, double* seconds) {
  uint64 horizon = 0;
  bool known = false;
  for (int attempt = 0; attempt < 2 && !known; ++attempt) {
    // Loaded means every rule raised the horizon (a reset zeroes it and
    // leaves Loaded under the same lock).
    LWLockAcquire(installations_lock(), LW_SHARED);
    known = ext->slot->rules_state == RulesState::Loaded;
    horizon = pg_atomic_read_u64(&ext->slot->longest_horizon);
    LWLockRelease(installations_lock());
    if (!known && attempt == 0) ensure_rules_loaded(ext);
  }
  if (!known) return false;
  const double horizon_s = static_cast<double>(horizon) / USECS_PER_SEC;
  // Capped at about 317 years: now() minus it stays a valid timestamp.
  *seconds = Min(2 * Max(horizon_s, static_cast<double>(settings.burst_window_s)), 1e10);
  return true;
}

// One transaction: deletes one batch of expired rows; true when the batch
// was full.  SKIP LOCKED: a row being settled is left for later.
bool retention_batch(const WorkerTarget& target, bool* gone) {
  if (settings.usage_retention_s <= 0) return false;
  begin_worker_transaction("rate_limiter: retention");
  const ExtensionCatalog* ext = worker_catalog(target, gone);
  double kept_s = 0;
  if (ext == nullptr || !kept_span_seconds(ext, &kept_s)) {
    commit_worker_transaction();
    return false;
  }
  const char* s = ext->quoted_schema;
  const char* sql = psprintf(
      "DELETE FROM %s.token_usage t WHERE t.id IN ("
      " SELECT u.id FROM %s.token_usage u"
      "  WHERE u.\"timestamp\" < least(pg_catalog.now() - pg_catalog.make_interval(secs => $1),"
      "                               pg_catalog.now() - pg_catalog.make_interval(secs => $2))"
      "  ORDER BY u.\"timestamp\" LIMIT $3 FOR UPDATE SKIP LOCKED)",
      s, s);
  Oid types[3] = {FLOAT8OID, FLOAT8OID, INT4OID};
  Datum args[3] = {Float8GetDatum(settings.usage_retention_s), Float8GetDatum(kept_s),
                   Int32GetDatum(kRetentionBatchRows)};
  AsExtensionOwner owner(ext);
  const int rc = SPI_execute_with_args(sql, 3, types, args, nullptr, false, 0);
  if (rc != SPI_OK_DELETE)
    elog(ERROR, "rate_limiter worker: retention failed: %s", SPI_result_code_string(rc));
  owner.restore();
  const bool full = SPI_processed >= static_cast<uint64>(kRetentionBatchRows);
  commit_worker_transaction();
  return full;
}

}  // namespace

void note_flushed_scope(const UsageEvent& e) {
  if (scopes == nullptr) reset_scopes();
  const ScopeKey key = key_of(e);
  if (hash_get_num_entries(scopes) >= kMaxTrackedScopes) return;  // refreshed at its next flush
  bool found = false;
  auto* entry = static_cast<ScopeEntry*>(hash_search(scopes, &key, HASH_ENTER, &found));
  if (found) return;
  entry->user = nullptr;  // until both copies are made
  entry->endpoint = nullptr;
  entry->user_len = static_cast<int16>(e.user_len);
  entry->endpoint_len = static_cast<int16>(e.endpoint != nullptr ? e.endpoint_len : -1);
  char* endpoint = e.endpoint != nullptr ? copy_of(e.endpoint, e.endpoint_len) : nullptr;
  char* user = copy_of(e.user, e.user_len);
  entry->endpoint = endpoint;
  entry->user = user;
}

bool flushed_scopes_full() {
  return scopes != nullptr && hash_get_num_entries(scopes) >= kMaxTrackedScopes;
}

bool run_upkeep(const WorkerTarget& target, bool (*stop)(), bool* gone) {
  // Slots of this database that no installation will use again (a CREATE
  // EXTENSION rolled back, a prepared DROP EXTENSION committed elsewhere).
  begin_worker_transaction("rate_limiter: reclaim");
  reclaim_abandoned_installations(target.database, target.installation);
  commit_worker_transaction();
  while (!stop() && !*gone && snapshot_batch(target, gone)) CHECK_FOR_INTERRUPTS();
  if (stop() || *gone) return false;
  return retention_batch(target, gone);
}

}  // namespace rate_limiter::pg
