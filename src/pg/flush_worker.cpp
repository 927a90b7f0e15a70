#include "rate_limiter/pg/flush_worker.hpp"

#include "rate_limiter/core/priority.hpp"
#include "rate_limiter/pg/alerts.hpp"
#include "rate_limiter/pg/extension_catalog.hpp"
#include "rate_limiter/pg/hot_path.hpp"
#include "rate_limiter/pg/metrics.hpp"
#include "rate_limiter/pg/postgres.hpp"
#include "rate_limiter/pg/settings.hpp"
#include "rate_limiter/pg/usage_queue.hpp"

extern "C" {
PGDLLEXPORT void rate_limiter_flusher_main(Datum);
}

namespace rate_limiter::pg {
namespace {

constexpr const char* kWorkerName = "rate_limiter flusher";
// After a crash or pg_terminate_backend, the postmaster starts it again
// this many seconds later (also the retry delay while rate_limiter.database
// does not exist).
constexpr int kRestartSeconds = 5;
// Events inserted per transaction: one INSERT of this many rows takes well
// under a second and bounds the flusher's memory (a few MB).
constexpr uint64 kFlushBatchEvents = 10000;
// The counter snapshot and one retention batch, at most this often.
constexpr long kMaintenanceIntervalMs = 10000;
// Rows deleted per retention batch: short transactions, short row locks.
// A full batch makes the next cycle delete again.
constexpr int kRetentionBatchRows = 10000;
// Wait before retrying after an error (the events stay queued).
constexpr long kErrorBackoffMs = 1000;

constexpr int kInsertArgs = 7;

void detach_flusher(int, Datum) { usage_queue_attach_flusher(nullptr); }

void begin_transaction(const char* activity) {
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter flusher: SPI_connect failed");
  PushActiveSnapshot(GetTransactionSnapshot());
  pgstat_report_activity(STATE_RUNNING, activity);
}

void commit_transaction() {
  SPI_finish();
  PopActiveSnapshot();
  CommitTransactionCommand();
  pgstat_report_activity(STATE_IDLE, nullptr);
}

// nullptr when the extension is not installed in this database.
const ExtensionCatalog* installed_extension() {
  if (!OidIsValid(get_extension_oid("rate_limiter", true))) return nullptr;
  return extension_catalog();
}

Datum array_of(Datum* values, bool* nulls, int n, Oid element_type) {
  int16 length;
  bool by_value;
  char align;
  get_typlenbyvalalign(element_type, &length, &by_value, &align);
  int dims[1] = {n};
  int lower_bounds[1] = {1};
  return PointerGetDatum(
      construct_md_array(values, nulls, 1, dims, lower_bounds, element_type, length, by_value, align));
}

Datum text_or_null(const char* bytes, int length, bool* is_null) {
  *is_null = bytes == nullptr;
  return bytes == nullptr ? (Datum)0 : PointerGetDatum(cstring_to_text_with_len(bytes, length));
}

// The columns of one batch, one array each, for a single INSERT ... SELECT
// FROM unnest(...).
struct Columns {
  Datum* values[kInsertArgs];
  bool* nulls[kInsertArgs];
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
    c->values[5][i] = CStringGetTextDatum(core::priority_name(static_cast<core::Priority>(e.priority)));
  c->values[6][i] = TimestampTzGetDatum(e.at);
}

// Inserts the rows; returns how many were inserted.  Explicit ids (grants,
// whose allocation_id is already known) are kept; 0 takes nextval.  ON
// CONFLICT makes a repeated flush of the same event harmless.
uint64 insert_rows(const ExtensionCatalog* ext, Columns* c, int n) {
  const Oid sequence = get_relname_relid("token_usage_id_seq", ext->schema);
  if (!OidIsValid(sequence)) elog(ERROR, "rate_limiter flusher: token_usage_id_seq is missing");
  const char* sql = psprintf(
      "INSERT INTO %s.token_usage "
      "(id, user_id, session_id, tokens_used, api_endpoint, priority_level, \"timestamp\") "
      "SELECT CASE WHEN e.id = 0 THEN pg_catalog.nextval(%u::pg_catalog.regclass) ELSE e.id END, "
      "e.user_id, e.session_id, e.tokens, e.endpoint, e.priority, e.at "
      "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
      "pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) "
      "AS e(id, user_id, session_id, tokens, endpoint, priority, at) "
      "ON CONFLICT (id) DO NOTHING",
      ext->quoted_schema, sequence);
  const Oid element_types[kInsertArgs] = {INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
  const Oid array_types[kInsertArgs] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
                                        TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
  Datum args[kInsertArgs];
  for (int a = 0; a < kInsertArgs; ++a) args[a] = array_of(c->values[a], c->nulls[a], n, element_types[a]);
  AsExtensionOwner owner(ext);
  const int rc = SPI_execute_with_args(sql, kInsertArgs, const_cast<Oid*>(array_types), args, nullptr,
                                       false, 0);
  if (rc != SPI_OK_INSERT) elog(ERROR, "rate_limiter flusher: insert failed: %s", SPI_result_code_string(rc));
  owner.restore();
  return SPI_processed;
}

// One transaction: up to kFlushBatchEvents events from the queue tail, but
// not past `end`.  The queue advances only after the commit.  Returns
// false when there was nothing to do (or the extension is not installed).
bool flush_batch(uint64 end) {
  const QueueWindow w = usage_queue_window();
  end = Min(end, w.head);
  if (w.tail >= end) return false;
  begin_transaction("rate_limiter: flushing usage");
  const ExtensionCatalog* ext = installed_extension();
  if (ext == nullptr) {
    commit_transaction();
    return false;
  }
  Columns columns;
  for (int a = 0; a < kInsertArgs; ++a) {
    columns.values[a] = static_cast<Datum*>(palloc(kFlushBatchEvents * sizeof(Datum)));
    columns.nulls[a] = static_cast<bool*>(palloc(kFlushBatchEvents * sizeof(bool)));
  }
  char record[kMaxEncodedEventBytes];
  uint64 position = w.tail;
  uint64 events = 0;
  uint64 foreign = 0;
  int rows = 0;
  while (position < end && events < kFlushBatchEvents) {
    position += usage_queue_read(position, record);
    ++events;
    const UsageEvent e = decode_usage_event(record);
    // Events of an installation that no longer exists (the extension was
    // dropped, or recreated with a new OID): their table is gone.
    if (e.database != MyDatabaseId || e.extension != ext->extension) {
      ++foreign;
      continue;
    }
    add_row(&columns, rows++, e);
  }
  const uint64 inserted = rows > 0 ? insert_rows(ext, &columns, rows) : 0;
  commit_transaction();
  // Count before the tail moves: a session waiting in rate_limiter_flush()
  // returns as soon as the tail passes its events, and must then see them
  // counted.
  metric_add(&shared->metrics.usage_rows_flushed, inserted);
  usage_queue_consume(position - w.tail, events);
  if (foreign > 0)
    ereport(LOG, (errmsg("rate_limiter flusher discarded " UINT64_FORMAT
                         " usage events of a former installation of the extension",
                         foreign)));
  if (inserted < static_cast<uint64>(rows))
    ereport(LOG, (errmsg("rate_limiter flusher skipped " UINT64_FORMAT
                         " usage events whose id was already in token_usage",
                         static_cast<uint64>(rows) - inserted)));
  return true;
}

// Alerts per transaction: bounds the flusher's memory like kFlushBatchEvents.
constexpr uint64 kAlertBatch = 1000;
constexpr int kAlertArgs = 6;

// Inserts the alerts and notifies the channel of each row actually inserted
// (ON CONFLICT DO NOTHING is the dedup, see alerts.hpp), in the caller's
// transaction: NOTIFY is delivered at its commit.  Returns the rows inserted.
uint64 insert_alerts(const ExtensionCatalog* ext, Datum* columns[kAlertArgs], bool* nulls[kAlertArgs], int n) {
  const bool notify = settings.alert_channel != nullptr && settings.alert_channel[0] != '\0';
  // The volatile pg_notify() in the target list is evaluated after the
  // sort, so notifications go out in id order.
  const char* sql = psprintf(
      "WITH ins AS (INSERT INTO %s.rate_limit_alerts "
      "(kind, user_id, api_endpoint, scope, window_start, payload) "
      "SELECT a.kind, a.user_id, a.endpoint, a.scope, a.window_start, a.payload::pg_catalog.jsonb "
      "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), "
      "pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6)) WITH ORDINALITY "
      "AS a(kind, user_id, endpoint, scope, window_start, payload, n) ORDER BY a.n "
      "ON CONFLICT (kind, user_id, api_endpoint, scope, window_start) DO NOTHING "
      "RETURNING id, payload) "
      "SELECT ins.id%s FROM ins ORDER BY ins.id",
      ext->quoted_schema, notify ? ", pg_catalog.pg_notify($7, ins.payload::pg_catalog.text)" : "");
  const Oid element_types[kAlertArgs] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID};
  Oid types[kAlertArgs + 1] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
                               TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTOID};
  Datum args[kAlertArgs + 1];
  for (int a = 0; a < kAlertArgs; ++a) args[a] = array_of(columns[a], nulls[a], n, element_types[a]);
  args[kAlertArgs] = CStringGetTextDatum(notify ? settings.alert_channel : "");
  AsExtensionOwner owner(ext);
  const int rc = SPI_execute_with_args(sql, notify ? kAlertArgs + 1 : kAlertArgs, types, args, nullptr,
                                       false, 0);
  if (rc != SPI_OK_SELECT) elog(ERROR, "rate_limiter flusher: alert insert failed: %s", SPI_result_code_string(rc));
  owner.restore();
  return SPI_processed;
}

// One transaction: up to kAlertBatch alerts from the queue tail, not past
// `end`.  Alerts of other databases (or former installations), and all
// alerts while the extension (or its 1.1 alert table) is missing, are
// dropped: the flusher serves one database, and alerts are best effort.
// The queue advances only after the commit.  False: nothing to do.
bool flush_alert_batch(uint64 end) {
  const QueueWindow w = alert_queue_window();
  end = Min(end, w.head);
  if (w.tail >= end) return false;
  begin_transaction("rate_limiter: writing alerts");
  const ExtensionCatalog* ext = installed_extension();
  const bool has_table = ext != nullptr && OidIsValid(get_relname_relid("rate_limit_alerts", ext->schema));
  Datum* columns[kAlertArgs];
  bool* nulls[kAlertArgs];
  for (int a = 0; a < kAlertArgs; ++a) {
    columns[a] = static_cast<Datum*>(palloc(kAlertBatch * sizeof(Datum)));
    nulls[a] = static_cast<bool*>(palloc0(kAlertBatch * sizeof(bool)));
  }
  uint64 position = w.tail;
  uint64 foreign = 0;
  int rows = 0;
  AlertRecord r;
  while (position < end && position - w.tail < kAlertBatch) {
    alert_queue_read(position++, &r);
    if (!has_table || r.database != MyDatabaseId ||
        (OidIsValid(r.extension) && r.extension != ext->extension)) {
      ++foreign;
      continue;
    }
    bool null_scope = false;
    const char* scope = alert_scope_text(r);
    columns[0][rows] = CStringGetTextDatum(alert_kind_text(r));
    columns[1][rows] = text_or_null(r.user_len >= 0 ? r.user : nullptr, r.user_len, &nulls[1][rows]);
    columns[2][rows] = text_or_null(r.endpoint_len >= 0 ? r.endpoint : nullptr, r.endpoint_len, &nulls[2][rows]);
    columns[3][rows] = text_or_null(scope, scope != nullptr ? static_cast<int>(strlen(scope)) : 0, &null_scope);
    nulls[3][rows] = null_scope;
    columns[4][rows] = TimestampTzGetDatum(unix_to_timestamptz(r.window_start));
    columns[5][rows] = CStringGetTextDatum(alert_payload(r));
    ++rows;
  }
  const uint64 inserted = rows > 0 ? insert_alerts(ext, columns, nulls, rows) : 0;
  commit_transaction();
  alert_queue_consume(position - w.tail);
  metric_add(&shared->metrics.alerts_sent, inserted);
  if (foreign > 0)
    ereport(DEBUG1, (errmsg("rate_limiter flusher dropped " UINT64_FORMAT
                            " alerts of other databases or installations",
                            foreign)));
  return true;
}

// Deletes one batch of expired rows; true when the batch was full.  The
// cutoff keeps every row inside twice the longest window of any rule (and
// of the burst budgets), so no live window, nor the previous window a
// sliding window reads, nor a rebuild of counters from token_usage, loses
// rows.  SKIP LOCKED: a row being settled is left for later.
bool delete_expired(const ExtensionCatalog* ext) {
  const char* s = ext->quoted_schema;
  const char* sql = psprintf(
      "DELETE FROM %s.token_usage t WHERE t.id IN ("
      " SELECT u.id FROM %s.token_usage u"
      "  WHERE u.\"timestamp\" < least("
      "    pg_catalog.now() - pg_catalog.make_interval(secs => $1),"
      "    pg_catalog.now() - 2 * greatest(pg_catalog.make_interval(secs => $2),"
      "      (SELECT max(greatest(l.period_interval, l.burst_window,"
      "                           make_interval(secs => l.burst_window_seconds)))"
      "         FROM %s.token_limits l),"
      "      (SELECT max(greatest(r.window_duration, r.burst_window,"
      "                           make_interval(secs => r.burst_window_seconds)))"
      "         FROM %s.request_limits r)))"
      "  ORDER BY u.\"timestamp\" LIMIT $3 FOR UPDATE SKIP LOCKED)",
      s, s, s, s);
  Oid types[3] = {FLOAT8OID, FLOAT8OID, INT4OID};
  Datum args[3] = {Float8GetDatum(settings.usage_retention_s), Float8GetDatum(settings.burst_window_s),
                   Int32GetDatum(kRetentionBatchRows)};
  const int rc = SPI_execute_with_args(sql, 3, types, args, nullptr, false, 0);
  if (rc != SPI_OK_DELETE) elog(ERROR, "rate_limiter flusher: retention failed: %s", SPI_result_code_string(rc));
  return SPI_processed >= static_cast<uint64>(kRetentionBatchRows);
}

// The counter snapshot and retention; returns whether retention is behind.
bool maintain() {
  begin_transaction("rate_limiter: maintenance");
  const ExtensionCatalog* ext = installed_extension();
  bool behind = false;
  if (ext != nullptr) {
    // Both need the 1.1 schema; a 1.0 installation is left alone.
    Oid argtypes[1] = {BOOLOID};
    List* name = list_make2(makeString(pstrdup(ext->schema_name)),
                            makeString(pstrdup("rate_limiter_snapshot_counters")));
    if (OidIsValid(LookupFuncName(name, 1, argtypes, true))) {
      AsExtensionOwner owner(ext);
      const int rc = SPI_execute(
          psprintf("SELECT %s.rate_limiter_snapshot_counters(true)", ext->quoted_schema), false, 0);
      if (rc != SPI_OK_SELECT) elog(ERROR, "rate_limiter flusher: counter snapshot failed");
      if (settings.usage_retention_s > 0) behind = delete_expired(ext);
      owner.restore();
    }
  }
  commit_transaction();
  return behind;
}

// One round of work.  An ERROR is logged and rolled back here; false then.
bool run_cycle(bool maintenance, bool* retention_behind) {
  MemoryContext cycle_context = CurrentMemoryContext;
  volatile bool ok = true;
  PG_TRY();
  {
    if (!RecoveryInProgress()) {
      // Up to what is queued now: producers faster than the flusher must
      // not starve the maintenance.
      // The lag before this flush: what callers have been seeing.
      const int64 lag_ms = usage_queue_stats().lag_ms;
      if (settings.alert_flush_lag_ms > 0 && lag_ms > settings.alert_flush_lag_ms)
        raise_flush_lag_alert(MyDatabaseId, InvalidOid, lag_ms, settings.alert_flush_lag_ms,
                              limiter_now_unix());
      const uint64 end = usage_queue_window().head;
      while (flush_batch(end)) CHECK_FOR_INTERRUPTS();
      const uint64 alerts_end = alert_queue_window().head;
      while (flush_alert_batch(alerts_end)) CHECK_FOR_INTERRUPTS();
      if (maintenance) *retention_behind = maintain();
    }
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(cycle_context);
    HOLD_INTERRUPTS();
    EmitErrorReport();
    AbortCurrentTransaction();
    FlushErrorState();
    RESUME_INTERRUPTS();
    pgstat_report_activity(STATE_IDLE, nullptr);
    ok = false;
  }
  PG_END_TRY();
  MemoryContextSwitchTo(cycle_context);
  return ok;
}

}  // namespace

void register_flush_worker() {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof worker);
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = kRestartSeconds;
  strlcpy(worker.bgw_library_name, "rate_limiter", BGW_MAXLEN);
  strlcpy(worker.bgw_function_name, "rate_limiter_flusher_main", BGW_MAXLEN);
  strlcpy(worker.bgw_name, kWorkerName, BGW_MAXLEN);
  strlcpy(worker.bgw_type, kWorkerName, BGW_MAXLEN);
  RegisterBackgroundWorker(&worker);
}

}  // namespace rate_limiter::pg

using namespace rate_limiter::pg;

void rate_limiter_flusher_main(Datum) {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  // Not die(): a SIGTERM (shutdown, pg_terminate_backend) only sets a flag,
  // so the loop can flush what is queued before it exits.
  pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
  BackgroundWorkerUnblockSignals();
  BackgroundWorkerInitializeConnection(settings.usage_database, nullptr, 0);
  pgstat_report_appname(kWorkerName);
  usage_queue_attach_flusher(MyLatch);
  before_shmem_exit(detach_flusher, (Datum)0);
  MemoryContext loop_context =
      AllocSetContextCreate(TopMemoryContext, "rate_limiter flusher", ALLOCSET_DEFAULT_SIZES);

  TimestampTz last_maintenance = 0;  // 0: at once after a (re)start
  TimestampTz retry_at = 0;          // after an error: no work before then
  bool retention_behind = false;
  for (;;) {
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    const bool stopping = ShutdownRequestPending;
    const TimestampTz now = GetCurrentTimestamp();
    long sleep_ms = settings.flush_interval_ms;
    // Waiters set the latch often; the backoff still holds for them.
    if (!stopping && now < retry_at) {
      sleep_ms = Max(TimestampDifferenceMilliseconds(now, retry_at), 1);
    } else {
      const bool maintenance =
          !stopping && (retention_behind || last_maintenance == 0 ||
                        TimestampDifferenceExceeds(last_maintenance, now, kMaintenanceIntervalMs));
      MemoryContextSwitchTo(loop_context);
      const bool ok = run_cycle(maintenance, &retention_behind);
      MemoryContextReset(loop_context);
      if (maintenance && ok) last_maintenance = now;
      if (!ok) {
        retry_at = TimestampTzPlusMilliseconds(now, kErrorBackoffMs);
        sleep_ms = kErrorBackoffMs;
      }
    }
    if (stopping) break;
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms,
                    PG_WAIT_EXTENSION);
  }
  // Exit status 1: the postmaster restarts the worker (0 would unregister
  // it), unless the server is shutting down.
  proc_exit(1);
}
