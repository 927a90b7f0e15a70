#include "rate_limiter/pg/workers/usage_batch_insert.hpp"

#include "rate_limiter/core/priority.hpp"
#include "rate_limiter/pg/workers/worker_sql.hpp"

namespace rate_limiter::pg {
namespace {

// id, user_id, session_id, tokens, endpoint, priority, at, and at 1.3
// granted_to, charges.  The dead-letter table keeps the first seven.
constexpr int kInsertArgs = 9;
constexpr int kLetterColumns = 7;
constexpr int kLetterArgs = 10;

// The columns of the batch, one array each, built once; every attempt
// passes a slice [lo, hi) of them to a single INSERT ... SELECT FROM
// unnest(...).
struct Columns {
  Datum* values[kInsertArgs];
  bool* nulls[kInsertArgs];
  // granted_to of the previous row: a batch comes mostly from a few roles,
  // and a syscache lookup plus a text per row showed in the flusher's
  // profile.  construct_md_array() copies, so rows may share the Datum.
  Oid last_role = InvalidOid;
  Datum last_role_name = (Datum)0;
  bool last_role_missing = true;
};

struct Batch {
  const ExtensionCatalog* ext;
  const UsageEvent* events;
  Columns columns;
  const char* insert_sql;  // with ON CONFLICT (id) DO NOTHING
  const char* fast_sql;    // without it: the first attempt of a batch
  MemoryContext keep;      // errors and the batch's columns: the caller's context
  MemoryContext attempt;   // one attempt's arrays, reset after each
  BatchInsertResult result;
};

void add_row(Columns* c, int i, const UsageEvent& e) {
  for (int a = 0; a < kInsertArgs; ++a) c->nulls[a][i] = false;
  c->values[0][i] = Int64GetDatum(e.id);
  c->values[1][i] = PointerGetDatum(cstring_to_text_with_len(e.user, e.user_len));
  c->values[2][i] = text_or_null(e.session, e.session_len, &c->nulls[2][i]);
  c->values[3][i] = Int64GetDatum(e.tokens);
  c->values[4][i] = text_or_null(e.endpoint, e.endpoint_len, &c->nulls[4][i]);
  c->nulls[5][i] = e.priority == kNoPriority;
  if (e.priority != kNoPriority)
    c->values[5][i] =
        CStringGetTextDatum(core::priority_name(static_cast<core::Priority>(e.priority)));
  c->values[6][i] = TimestampTzGetDatum(e.at);
  // The role's name (see the 1.3 update script); NULL once it is dropped.
  if (e.granted_to != c->last_role || i == 0) {
    const char* role = OidIsValid(e.granted_to) ? GetUserNameFromId(e.granted_to, true) : nullptr;
    c->last_role = e.granted_to;
    c->last_role_missing = role == nullptr;
    c->last_role_name = role != nullptr ? CStringGetTextDatum(role) : (Datum)0;
  }
  c->nulls[7][i] = c->last_role_missing;
  c->values[7][i] = c->last_role_name;
  c->nulls[8][i] = e.charges == nullptr;
  if (e.charges != nullptr) {
    bytea* b = static_cast<bytea*>(palloc(VARHDRSZ + e.charges_len));
    SET_VARSIZE(b, VARHDRSZ + e.charges_len);
    memcpy(VARDATA(b), e.charges, e.charges_len);
    c->values[8][i] = PointerGetDatum(b);
  }
}

// ON CONFLICT makes a repeated flush of the same event harmless (a batch
// the worker inserted but had not yet removed from the queue when the
// server stopped).  It costs the flusher about an eighth of its time (a
// speculative insertion and an index probe per row: perf on the flusher
// at 60k rows/s), so each batch is first tried without it; a batch that
// fails for any reason is tried again with it, then bisected.  (Without
// the unique index on token_usage.id, which the extension creates, the
// plain attempt would accept a repeated row; so would ON CONFLICT, which
// then has no arbiter and fails: the index is what makes a repeat harmless.)
const char* insert_sql(const ExtensionCatalog* ext, bool on_conflict) {
  const Oid sequence = get_relname_relid("token_usage_id_seq", ext->schema);
  if (!OidIsValid(sequence)) elog(ERROR, "rate_limiter worker: token_usage_id_seq is missing");
  return psprintf(
      "INSERT INTO %s.token_usage "
      "(id, user_id, session_id, tokens_used, api_endpoint, priority_level, \"timestamp\", "
      "granted_to, charges) "
      "SELECT CASE WHEN e.id = 0 THEN pg_catalog.nextval(%u::pg_catalog.regclass) ELSE e.id END, "
      "e.user_id, e.session_id, e.tokens, e.endpoint, e.priority, e.at, e.granted_to, e.charges "
      "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
      "pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), "
      "pg_catalog.unnest($8), pg_catalog.unnest($9)) "
      "AS e(id, user_id, session_id, tokens, endpoint, priority, at, granted_to, charges)%s",
      ext->quoted_schema, sequence, on_conflict ? " ON CONFLICT (id) DO NOTHING" : "");
}

// Rows [lo, lo + n); returns how many were inserted.
uint64 insert_rows(const Batch* b, const char* sql, int lo, int n) {
  const Oid element_types[kInsertArgs] = {INT8OID, TEXTOID,        TEXTOID, INT8OID, TEXTOID,
                                          TEXTOID, TIMESTAMPTZOID, TEXTOID, BYTEAOID};
  Oid array_types[kInsertArgs] = {INT8ARRAYOID,        TEXTARRAYOID, TEXTARRAYOID,
                                  INT8ARRAYOID,        TEXTARRAYOID, TEXTARRAYOID,
                                  TIMESTAMPTZARRAYOID, TEXTARRAYOID, BYTEAARRAYOID};
  Datum args[kInsertArgs];
  for (int a = 0; a < kInsertArgs; ++a)
    args[a] = array_of(b->columns.values[a] + lo, b->columns.nulls[a] + lo, n, element_types[a]);
  AsExtensionOwner owner(b->ext);
  const int rc = SPI_execute_with_args(sql, kInsertArgs, array_types, args, nullptr, false, 0);
  if (rc != SPI_OK_INSERT)
    elog(ERROR, "rate_limiter worker: insert failed: %s", SPI_result_code_string(rc));
  owner.restore();
  return SPI_processed;
}

void insert_letter(const Batch* b, int i, const ErrorData* error) {
  const UsageEvent& e = b->events[i];
  const char* sql = psprintf(
      "INSERT INTO %s.token_usage_dead_letters (id, user_id, session_id, tokens_used, "
      "api_endpoint, "
      "priority_level, \"timestamp\", error_sqlstate, error_message, error_detail) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
      b->ext->quoted_schema);
  Oid types[kLetterArgs] = {INT8OID, TEXTOID,        TEXTOID, INT8OID, TEXTOID,
                            TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID};
  Datum values[kLetterArgs];
  char nulls[kLetterArgs];
  for (int a = 0; a < kLetterColumns; ++a) {
    values[a] = b->columns.values[a][i];
    nulls[a] = b->columns.nulls[a][i] ? 'n' : ' ';
  }
  if (e.id == 0) nulls[0] = 'n';  // a counted check: no allocation_id
  values[7] = CStringGetTextDatum(unpack_sql_state(error->sqlerrcode));
  nulls[7] = ' ';
  values[8] = CStringGetTextDatum(error->message != nullptr ? error->message : "");
  nulls[8] = ' ';
  values[9] = error->detail != nullptr ? CStringGetTextDatum(error->detail) : (Datum)0;
  nulls[9] = error->detail != nullptr ? ' ' : 'n';
  AsExtensionOwner owner(b->ext);
  const int rc = SPI_execute_with_args(sql, kLetterArgs, types, values, nulls, false, 0);
  if (rc != SPI_OK_INSERT)
    elog(ERROR, "rate_limiter worker: dead-letter insert failed: %s", SPI_result_code_string(rc));
  owner.restore();
}

// Runs work() in a subtransaction of the worker's transaction.  True: it
// succeeded and was released into the transaction.  False: it failed with
// an error that is the rows' own, copied into b->keep as *error.  A
// transient error is re-thrown (the whole batch is then retried later).
template <typename Work>
bool in_subtransaction(const Batch* b, Work work, ErrorData** error) {
  MemoryContext outer = CurrentMemoryContext;
  ResourceOwner owner = CurrentResourceOwner;
  volatile bool ok = false;
  BeginInternalSubTransaction(nullptr);
  MemoryContextSwitchTo(outer);
  PG_TRY();
  {
    work();
    ReleaseCurrentSubTransaction();
    MemoryContextSwitchTo(outer);
    CurrentResourceOwner = owner;
    ok = true;
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(b->keep);
    ErrorData* e = CopyErrorData();
    FlushErrorState();
    RollbackAndReleaseCurrentSubTransaction();
    MemoryContextSwitchTo(outer);
    CurrentResourceOwner = owner;
    if (transient_error(e->sqlerrcode)) ReThrowError(e);
    *error = e;
  }
  PG_END_TRY();
  return ok;
}

void note_error(Batch* b, const ErrorData* error) {
  if (b->result.first_error[0] != '\0') return;
  snprintf(b->result.first_error, sizeof b->result.first_error, "%s: %s",
           unpack_sql_state(error->sqlerrcode), error->message != nullptr ? error->message : "");
}

// The last resort: the row in the server log, every field.
void log_row(const Batch* b, int i, const ErrorData* error, const ErrorData* letter_error) {
  const UsageEvent& e = b->events[i];
  ereport(WARNING,
          (errmsg("rate_limiter worker could not write a usage row of database %u; it is kept only "
                  "in this log",
                  MyDatabaseId),
           errdetail("id=" INT64_FORMAT " user_id=%s session_id=%s tokens_used=" INT64_FORMAT
                     " api_endpoint=%s priority_level=%s timestamp=%s; token_usage: %s: %s; "
                     "token_usage_dead_letters: %s",
                     e.id, pnstrdup(e.user, e.user_len),
                     e.session != nullptr ? pnstrdup(e.session, e.session_len) : "NULL", e.tokens,
                     e.endpoint != nullptr ? pnstrdup(e.endpoint, e.endpoint_len) : "NULL",
                     e.priority != kNoPriority
                         ? core::priority_name(static_cast<core::Priority>(e.priority))
                         : "NULL",
                     timestamptz_to_str(e.at), unpack_sql_state(error->sqlerrcode),
                     error->message != nullptr ? error->message : "",
                     letter_error == nullptr            ? "missing (extension version before 1.2)"
                     : letter_error->message != nullptr ? letter_error->message
                                                        : "refused")));
}

void set_aside(Batch* b, int i, const ErrorData* error) {
  ++b->result.dead_letters;
  note_error(b, error);
  ErrorData* letter_error = nullptr;
  if (in_subtransaction(
          b, [&] { insert_letter(b, i, error); }, &letter_error))
    return;
  log_row(b, i, error, letter_error);
}

// Rows [lo, hi) with sql in one statement; false and *error if it failed.
bool try_insert(Batch* b, const char* sql, int lo, int hi, ErrorData** error) {
  uint64 inserted = 0;
  MemoryContext outer = MemoryContextSwitchTo(b->attempt);
  const bool ok = in_subtransaction(
      b, [&] { inserted = insert_rows(b, sql, lo, hi - lo); }, error);
  MemoryContextSwitchTo(outer);
  MemoryContextReset(b->attempt);
  if (ok) b->result.inserted += inserted;
  return ok;
}

// Rows [lo, hi): all at once, else each half, down to single rows.
void insert_range(Batch* b, int lo, int hi) {
  ErrorData* error = nullptr;
  if (try_insert(b, b->insert_sql, lo, hi, &error)) return;
  if (hi - lo == 1) {
    set_aside(b, lo, error);
    return;
  }
  note_error(b, error);
  FreeErrorData(error);
  const int mid = lo + (hi - lo) / 2;
  insert_range(b, lo, mid);
  insert_range(b, mid, hi);
}

}  // namespace

bool transient_error(int sqlerrcode) {
  switch (ERRCODE_TO_CATEGORY(sqlerrcode)) {
    case ERRCODE_CONNECTION_EXCEPTION:              // 08
    case ERRCODE_INVALID_TRANSACTION_STATE:         // 25 (read-only, in recovery)
    case ERRCODE_TRANSACTION_ROLLBACK:              // 40 (serialization, deadlock)
    case ERRCODE_INSUFFICIENT_RESOURCES:            // 53 (disk full, out of memory)
    case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:  // 55 (lock not available)
    case ERRCODE_OPERATOR_INTERVENTION:             // 57 (cancel, shutdown)
    case ERRCODE_SYSTEM_ERROR:                      // 58 (I/O)
    case ERRCODE_CONFIG_FILE_ERROR:                 // F0
    case ERRCODE_INTERNAL_ERROR:                    // XX (not the rows' fault)
      return true;
    default:
      return false;
  }
}

BatchInsertResult insert_usage_batch(const ExtensionCatalog* ext, const UsageEvent* events, int n) {
  Batch b;
  b.ext = ext;
  b.events = events;
  b.insert_sql = insert_sql(ext, true);
  b.fast_sql = insert_sql(ext, false);
  b.keep = CurrentMemoryContext;
  b.attempt = AllocSetContextCreate(CurrentMemoryContext, "rate_limiter usage insert",
                                    ALLOCSET_DEFAULT_SIZES);
  // A deferred constraint or constraint trigger would fail at the commit,
  // outside every subtransaction, and the batch would be retried forever:
  // check them at the end of each attempt instead.
  if (SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) != SPI_OK_UTILITY)
    elog(ERROR, "rate_limiter worker: SET CONSTRAINTS failed");
  for (int a = 0; a < kInsertArgs; ++a) {
    b.columns.values[a] = static_cast<Datum*>(palloc(Max(n, 1) * sizeof(Datum)));
    b.columns.nulls[a] = static_cast<bool*>(palloc(Max(n, 1) * sizeof(bool)));
  }
  for (int i = 0; i < n; ++i) add_row(&b.columns, i, events[i]);
  if (n > 0) {
    ErrorData* error = nullptr;
    if (!try_insert(&b, b.fast_sql, 0, n, &error)) {
      // Not the rows' fault yet: a row written before, or one bad row
      // among many.  Said once per batch; rows set aside say more.
      ereport(
          LOG,
          (errmsg(
              "rate_limiter worker: a batch of %d usage rows of database %u was refused (%s: %s); "
              "retrying it with ON CONFLICT (id) DO NOTHING and, if needed, in parts",
              n, MyDatabaseId, unpack_sql_state(error->sqlerrcode),
              error->message != nullptr ? error->message : "")));
      FreeErrorData(error);
      insert_range(&b, 0, n);
    }
  }
  MemoryContextDelete(b.attempt);
  return b.result;
}

}  // namespace rate_limiter::pg
