#include "rate_limiter/pg/usage/usage_log.hpp"

#include "rate_limiter/core/priority.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage/usage_pending.hpp"

namespace rate_limiter::pg {
namespace {

// id, user_id, session_id, tokens_used, api_endpoint, priority_level,
// timestamp, and at 1.3 granted_to, charges.
constexpr int kColumns = 9;

// [0]: the id from the column default, RETURNING id; [1]: an explicit id.
SPIPlanPtr insert_plans[2] = {nullptr, nullptr};
bool insert_plans_stale = false;
Oid id_sequence = InvalidOid;  // token_usage_id_seq, found once per backend
enum class Served { Unknown, Yes, No };
Served served = Served::Unknown;
// Usage rows this backend inserted in its current transaction (kept even
// when a savepoint rolled them back: PREPARE is refused either way).
uint64 rows_in_transaction = 0;

void forget_plans() {
  // Called from an invalidation callback: only mark; free at next use.
  if (insert_plans[0] != nullptr || insert_plans[1] != nullptr) insert_plans_stale = true;
  id_sequence = InvalidOid;
}

SPIPlanPtr prepare_insert(const ExtensionCatalog* ext, bool explicit_id) {
  if (insert_plans_stale) {
    for (SPIPlanPtr& plan : insert_plans) {
      if (plan != nullptr) SPI_freeplan(plan);
      plan = nullptr;
    }
    insert_plans_stale = false;
  }
  SPIPlanPtr& slot = insert_plans[explicit_id ? 1 : 0];
  if (slot != nullptr) return slot;
  char sql[640];
  snprintf(sql, sizeof sql,
           "INSERT INTO %s.token_usage "
           "(id, user_id, session_id, tokens_used, api_endpoint, priority_level, \"timestamp\", "
           "granted_to, charges) "
           "VALUES (%s, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
           ext->quoted_schema, explicit_id ? "$1" : "DEFAULT");
  Oid types[kColumns] = {INT8OID, TEXTOID,        TEXTOID, INT8OID, TEXTOID,
                         TEXTOID, TIMESTAMPTZOID, TEXTOID, BYTEAOID};
  SPIPlanPtr plan = SPI_prepare(sql, kColumns, types);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the usage insert");
  if (SPI_keepplan(plan) != 0) elog(ERROR, "rate_limiter: could not save the usage insert");
  slot = plan;
  return plan;
}

// The id allocate_tokens returns in async mode, before the row exists.
// nextval_internal() is what nextval() runs, without the permission check
// (the caller needs no privilege on the sequence, as in sync mode).  The
// sequence has CACHE set (see the 1.1 upgrade script), so most calls take
// no buffer lock and write no WAL.
int64 next_usage_id(const ExtensionCatalog* ext) {
  if (!OidIsValid(id_sequence)) {
    id_sequence = get_relname_relid("token_usage_id_seq", ext->schema);
    if (!OidIsValid(id_sequence))
      ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                      errmsg("rate_limiter sequence \"token_usage_id_seq\" is missing"),
                      errhint("Reinstall the extension: DROP EXTENSION rate_limiter; "
                              "CREATE EXTENSION rate_limiter;")));
  }
  return nextval_internal(id_sequence, false);
}

Datum text_or_null(const char* bytes, int length, char* null_flag) {
  if (bytes == nullptr) {
    *null_flag = 'n';
    return (Datum)0;
  }
  return PointerGetDatum(cstring_to_text_with_len(bytes, length));
}

// granted_to is stored as the role's name (see the 1.3 update script); a
// role dropped since the call leaves it NULL: administrators only.
Datum role_name_or_null(Oid role, char* null_flag) {
  const char* name = OidIsValid(role) ? GetUserNameFromId(role, true) : nullptr;
  if (name == nullptr) {
    *null_flag = 'n';
    return (Datum)0;
  }
  return CStringGetTextDatum(name);
}

Datum bytea_or_null(const char* bytes, int length, char* null_flag) {
  if (bytes == nullptr) {
    *null_flag = 'n';
    return (Datum)0;
  }
  bytea* b = static_cast<bytea*>(palloc(VARHDRSZ + length));
  SET_VARSIZE(b, VARHDRSZ + length);
  memcpy(VARDATA(b), bytes, length);
  return PointerGetDatum(b);
}

UsageEvent event_of(const UsageRow& row, const ExtensionCatalog* ext) {
  UsageEvent e;
  e.tokens = row.tokens;
  e.at = row.at;
  e.database = MyDatabaseId;
  e.extension = ext->extension;
  e.priority = row.priority;
  e.user = row.user->value.data();
  e.user_len = static_cast<int>(row.user->value.size());
  if (row.endpoint->present) {
    e.endpoint = row.endpoint->value.data();
    e.endpoint_len = static_cast<int>(row.endpoint->value.size());
  }
  if (row.session->present) {
    e.session = row.session->value.data();
    e.session_len = static_cast<int>(row.session->value.size());
  }
  // The role settle_tokens lets settle the grant (with its members and
  // administrators).
  e.granted_to = GetUserId();
  if (row.charges != nullptr && row.charges_len > 0) {
    e.charges = row.charges;
    e.charges_len = static_cast<int>(row.charges_len);
  }
  return e;
}

// Before a row is written in the caller's transaction: its charge must
// follow that transaction as well (usage_log.hpp).
int64 insert_following(const UsageRow& row, const UsageEvent& event, bool refund_on_abort) {
  if (!refund_on_abort && row.follow_transaction != nullptr)
    row.follow_transaction(row.follow_context);
  return insert_usage_row(event);
}

// Async: to the installation's queue stream (or, for refund_on_abort, to
// this transaction's pending events); when there is no room within
// queue_full_wait, or the transaction reached its reservation cap, written
// synchronously instead.
void enqueue_or_insert(const ExtensionCatalog* ext, const UsageRow& row, const UsageEvent& event,
                       bool refund_on_abort) {
  char record[kMaxEncodedEventBytes];
  const uint32 length = encode_usage_event(event, record);
  const int stream = usage_stream_of(ext->slot);
  bool capped = false;
  const bool queued =
      refund_on_abort
          ? defer_usage_event(stream, record, length, settings.queue_full_wait_ms, &capped)
          : usage_queue_append(stream, record, length, settings.queue_full_wait_ms);
  if (queued) return;
  metric_add(&shared->metrics.usage_sync_fallbacks);
  if (capped) metric_add(&shared->metrics.usage_cap_fallbacks);
  insert_following(row, event, refund_on_abort);
}

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      if (rows_in_transaction > 0)
        ereport(
            ERROR,
            (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
             errmsg("cannot PREPARE a transaction that wrote rate limiter usage rows"),
             errdetail("Until COMMIT PREPARED its usage rows would be invisible, also to the "
                       "rebuild of the counters after a crash, which would hand out their quota "
                       "again."),
             errhint("Call allocate_tokens, check_rate_limit and enforce_rate_limit outside the "
                     "prepared transaction, or with rate_limiter.usage_log = async, and do not "
                     "call settle_tokens or rate_limiter_flush() in it after refund_on_abort "
                     "calls.")));
      break;
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PREPARE:
      rows_in_transaction = 0;
      break;
    default:
      break;
  }
}

}  // namespace

void require_writable_transaction() {
  if (RecoveryInProgress())
    ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                    errmsg("rate_limiter cannot allocate on a hot standby"),
                    errhint("Call the primary server: quota is counted there.")));
  if (XactReadOnly)
    ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                    errmsg("rate_limiter cannot record usage in a read-only transaction")));
}

bool usage_log_async() { return settings.usage_log == kUsageLogAsync && database_served(); }

bool database_served() {
  if (served == Served::Unknown) {
    // Looked up once per backend: MyDatabaseId never changes, nor does
    // rate_limiter.database (postmaster).  A database that turns into a
    // template, or stops accepting connections, later keeps the answer its
    // sessions already had (their events queue until a worker can drain
    // them, or fall back to synchronous writes when its share is full).
    bool yes = false;
    HeapTuple tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));
    if (HeapTupleIsValid(tuple)) {
      const auto* form = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
      const bool named = settings.usage_database == nullptr || settings.usage_database[0] == '\0' ||
                         strcmp(NameStr(form->datname), settings.usage_database) == 0;
      yes = named && !form->datistemplate && form->datallowconn;
      ReleaseSysCache(tuple);
    }
    served = yes ? Served::Yes : Served::No;
  }
  return served == Served::Yes;
}

int64 insert_usage_row(const UsageEvent& e) {
  const ExtensionCatalog* ext = extension_catalog();
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = prepare_insert(ext, e.id != 0);
  Datum values[kColumns];
  char nulls[kColumns] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
  values[0] = Int64GetDatum(e.id);
  values[1] = PointerGetDatum(cstring_to_text_with_len(e.user, e.user_len));
  values[2] = text_or_null(e.session, e.session_len, &nulls[2]);
  values[3] = Int64GetDatum(e.tokens);
  values[4] = text_or_null(e.endpoint, e.endpoint_len, &nulls[4]);
  if (e.priority != kNoPriority)
    values[5] = CStringGetTextDatum(core::priority_name(static_cast<core::Priority>(e.priority)));
  else
    nulls[5] = 'n';
  values[6] = TimestampTzGetDatum(e.at);
  values[7] = role_name_or_null(e.granted_to, &nulls[7]);
  values[8] = bytea_or_null(e.charges, e.charges_len, &nulls[8]);
  int rc = SPI_execute_plan(plan, values, nulls, false, 0);
  if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
    elog(ERROR, "rate_limiter: usage insert failed: %s", SPI_result_code_string(rc));
  bool isnull = false;
  const int64 id =
      DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  SPI_finish();
  owner.restore();
  ++rows_in_transaction;
  return id;
}

int64 log_usage(const UsageRow& row, bool refund_on_abort) {
  if (settings.usage_log == kUsageLogOff) return -1;
  const ExtensionCatalog* ext = extension_catalog();
  UsageEvent event = event_of(row, ext);
  if (!usage_log_async()) {
    const int64 id = insert_following(row, event, refund_on_abort);
    if (row.id_known != nullptr && row.priority != kNoPriority)
      row.id_known(row.follow_context, id);
    return id;
  }
  // A grant needs its id now (allocation_id); a counted check does not, and
  // leaves it to the column default when flushed.
  if (row.priority != kNoPriority) {
    event.id = next_usage_id(ext);
    if (row.id_known != nullptr) row.id_known(row.follow_context, event.id);
  }
  enqueue_or_insert(ext, row, event, refund_on_abort);
  return row.priority != kNoPriority ? event.id : -1;
}

void register_usage_log_reset() { on_extension_catalog_reset(forget_plans); }

void register_usage_log_callbacks() { RegisterXactCallback(on_xact_event, nullptr); }

}  // namespace rate_limiter::pg
