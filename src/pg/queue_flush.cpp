#include "rate_limiter/pg/queue_flush.hpp"

#include "rate_limiter/core/priority.hpp"
#include "rate_limiter/pg/alert_queue.hpp"
#include "rate_limiter/pg/alerts.hpp"
#include "rate_limiter/pg/metrics.hpp"
#include "rate_limiter/pg/settings.hpp"
#include "rate_limiter/pg/upkeep.hpp"
#include "rate_limiter/pg/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kInsertArgs = 7;

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
  if (!OidIsValid(sequence)) elog(ERROR, "rate_limiter worker: token_usage_id_seq is missing");
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
  if (rc != SPI_OK_INSERT) elog(ERROR, "rate_limiter worker: insert failed: %s", SPI_result_code_string(rc));
  owner.restore();
  return SPI_processed;
}

constexpr int kAlertArgs = 6;

// Inserts the alerts and notifies the channel of each row actually inserted
// (ON CONFLICT DO NOTHING is the dedup, see alerts.hpp), in the caller's
// transaction: NOTIFY is delivered at its commit, to the listeners of this
// database.  Returns the rows inserted.
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
  if (rc != SPI_OK_SELECT) elog(ERROR, "rate_limiter worker: alert insert failed: %s", SPI_result_code_string(rc));
  owner.restore();
  return SPI_processed;
}

// A broken chain cannot happen with a cursor inside a window; should it
// ever, the stream is dropped rather than read forever.
void drop_unreadable(StreamPool& pool, const WorkerTarget& target, const char* what) {
  pool.discard(target.stream);
  ereport(LOG, (errmsg("rate_limiter worker discarded the unreadable %s of database %u", what, target.database)));
}

}  // namespace

bool flush_usage_batch(const WorkerTarget& target, uint64 end, bool* gone) {
  StreamPool& pool = usage_queue_pool();
  const StreamWindow w = pool.window(target.stream);
  end = Min(end, w.head);
  if (w.tail >= end) return false;
  begin_worker_transaction("rate_limiter: flushing usage");
  const ExtensionCatalog* ext = worker_catalog(target, gone);
  if (ext == nullptr) {
    commit_worker_transaction();
    return false;
  }
  Columns columns;
  for (int a = 0; a < kInsertArgs; ++a) {
    columns.values[a] = static_cast<Datum*>(palloc(kFlushBatchEvents * sizeof(Datum)));
    columns.nulls[a] = static_cast<bool*>(palloc(kFlushBatchEvents * sizeof(bool)));
  }
  StreamCursor cursor{w.tail, w.tail_chunk, 0};
  uint64 foreign = 0;
  int rows = 0;
  bool broken = false;
  while (cursor.position < end && cursor.records < kFlushBatchEvents) {
    uint32 length = 0;
    const char* record = pool.read(&cursor, &length);
    if (record == nullptr || length < sizeof(EncodedHeader)) {
      broken = true;
      break;
    }
    const UsageEvent e = decode_usage_event(record);
    if (e.database != target.database || e.extension != target.extension) {
      ++foreign;
      continue;
    }
    add_row(&columns, rows++, e);
    note_flushed_scope(e);
  }
  const uint64 inserted = rows > 0 ? insert_rows(ext, &columns, rows) : 0;
  commit_worker_transaction();
  // Count before the tail moves: a session waiting in rate_limiter_flush()
  // returns as soon as the tail passes its events, and must then see them
  // counted.
  metric_add(&shared->metrics.usage_rows_flushed, inserted);
  if (broken) {
    drop_unreadable(pool, target, "usage queue");
    return false;
  }
  pool.consume(target.stream, cursor);
  if (foreign > 0)
    ereport(LOG, (errmsg("rate_limiter worker discarded " UINT64_FORMAT
                         " usage events of a former installation of the extension",
                         foreign)));
  if (inserted < static_cast<uint64>(rows))
    ereport(LOG, (errmsg("rate_limiter worker skipped " UINT64_FORMAT
                         " usage events whose id was already in token_usage",
                         static_cast<uint64>(rows) - inserted)));
  return true;
}

bool flush_alert_batch(const WorkerTarget& target, uint64 end, bool* gone) {
  StreamPool& pool = alert_queue_pool();
  const StreamWindow w = pool.window(target.stream);
  end = Min(end, w.head);
  if (w.tail >= end) return false;
  begin_worker_transaction("rate_limiter: writing alerts");
  const ExtensionCatalog* ext = worker_catalog(target, gone);
  if (ext == nullptr) {
    commit_worker_transaction();
    return false;
  }
  // Alerts are best effort: without the 1.1 alert table they are dropped.
  const bool has_table = OidIsValid(get_relname_relid("rate_limit_alerts", ext->schema));
  Datum* columns[kAlertArgs];
  bool* nulls[kAlertArgs];
  for (int a = 0; a < kAlertArgs; ++a) {
    columns[a] = static_cast<Datum*>(palloc(kAlertBatch * sizeof(Datum)));
    nulls[a] = static_cast<bool*>(palloc0(kAlertBatch * sizeof(bool)));
  }
  StreamCursor cursor{w.tail, w.tail_chunk, 0};
  uint64 foreign = 0;
  int rows = 0;
  bool broken = false;
  AlertRecord r;
  while (cursor.position < end && cursor.records < kAlertBatch) {
    uint32 length = 0;
    const char* record = pool.read(&cursor, &length);
    if (record == nullptr || length != sizeof r) {
      broken = true;
      break;
    }
    memcpy(&r, record, sizeof r);
    if (!has_table || r.database != target.database ||
        (OidIsValid(r.extension) && r.extension != target.extension)) {
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
  commit_worker_transaction();
  metric_add(&shared->metrics.alerts_sent, inserted);
  if (broken) {
    drop_unreadable(pool, target, "alert queue");
    return false;
  }
  pool.consume(target.stream, cursor);
  if (foreign > 0)
    ereport(DEBUG1, (errmsg("rate_limiter worker dropped " UINT64_FORMAT
                            " alerts of a former installation",
                            foreign)));
  return true;
}

void drop_installation_records(const WorkerTarget& target) noexcept {
  auto drop = [&](StreamPool& pool, auto is_own) {
    const StreamWindow w = pool.window(target.stream);
    StreamCursor cursor{w.tail, w.tail_chunk, 0};
    while (cursor.position < w.head) {
      const StreamCursor before = cursor;
      uint32 length = 0;
      const char* record = pool.read(&cursor, &length);
      if (record == nullptr || !is_own(record, length)) {
        cursor = before;
        break;
      }
    }
    pool.consume(target.stream, cursor);
  };
  drop(usage_queue_pool(), [&](const char* record, uint32 length) {
    EncodedHeader h;
    if (length < sizeof h) return false;
    memcpy(&h, record, sizeof h);
    return h.database == target.database && h.extension == target.extension;
  });
  drop(alert_queue_pool(), [&](const char* record, uint32 length) {
    AlertRecord r;
    if (length != sizeof r) return false;
    memcpy(&r, record, sizeof r);
    return r.database == target.database && (r.extension == target.extension || !OidIsValid(r.extension));
  });
}

}  // namespace rate_limiter::pg
