#include "rate_limiter/pg/workers/queue_flush.hpp"

#include "rate_limiter/core/priority.hpp"
#include "rate_limiter/pg/alerts.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"
#include "rate_limiter/pg/workers/upkeep.hpp"
#include "rate_limiter/pg/workers/usage_batch_insert.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kAlertArgs = 6;

// Inserts the alerts and notifies the channel of each row actually inserted
// (ON CONFLICT DO NOTHING is the dedup, see alerts.hpp), in the caller's
// transaction: NOTIFY is delivered at its commit, to the listeners of this
// database.  Returns the rows inserted.
uint64 insert_alerts(const ExtensionCatalog* ext, Datum* columns[kAlertArgs],
                     bool* nulls[kAlertArgs], int n) {
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
  const Oid element_types[kAlertArgs] = {TEXTOID, TEXTOID,        TEXTOID,
                                         TEXTOID, TIMESTAMPTZOID, TEXTOID};
  Oid types[kAlertArgs + 1] = {TEXTARRAYOID,        TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
                               TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTOID};
  Datum args[kAlertArgs + 1];
  for (int a = 0; a < kAlertArgs; ++a)
    args[a] = array_of(columns[a], nulls[a], n, element_types[a]);
  args[kAlertArgs] = CStringGetTextDatum(notify ? settings.alert_channel : "");
  AsExtensionOwner owner(ext);
  const int rc = SPI_execute_with_args(sql, notify ? kAlertArgs + 1 : kAlertArgs, types, args,
                                       nullptr, false, 0);
  if (rc != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter worker: alert insert failed: %s", SPI_result_code_string(rc));
  owner.restore();
  return SPI_processed;
}

// A broken chain cannot happen with a cursor inside a window; should it
// ever, the stream is dropped rather than read forever.
void drop_unreadable(StreamPool& pool, const WorkerTarget& target, const char* what) {
  pool.discard(target.stream);
  ereport(LOG, (errmsg("rate_limiter worker discarded the unreadable %s of database %u", what,
                       target.database)));
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
  // Decoded in place: the events point into the stream's chunks, which
  // stay until consume().
  auto* events = static_cast<UsageEvent*>(palloc(kFlushBatchEvents * sizeof(UsageEvent)));
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
    events[rows++] = e;
    note_flushed_scope(e);
  }
  // Rows token_usage refuses are set aside (usage_batch_insert.hpp); a
  // transient error leaves the whole batch queued.
  const BatchInsertResult result = insert_usage_batch(ext, events, rows);
  const uint64 inserted = result.inserted;
  commit_worker_transaction();
  // Count before the tail moves: a session waiting in rate_limiter_flush()
  // returns as soon as the tail passes its events, and must then see them
  // counted.
  metric_add(&shared->metrics.usage_rows_flushed, inserted);
  if (result.dead_letters > 0) {
    metric_add(&shared->metrics.usage_dead_letters, result.dead_letters);
    raise_dead_letter_alert(target.stream, target.database, target.extension, result.dead_letters,
                            limiter_now_unix());
    ereport(WARNING,
            (errmsg("rate_limiter worker set aside " UINT64_FORMAT
                    " usage rows that token_usage refused, in token_usage_dead_letters",
                    result.dead_letters),
             errdetail("First error: %s", result.first_error),
             errhint("Fix the constraint or trigger, then move the rows back into token_usage.")));
  }
  if (broken) {
    drop_unreadable(pool, target, "usage queue");
    return false;
  }
  pool.consume(target.stream, cursor);
  if (foreign > 0)
    ereport(LOG, (errmsg("rate_limiter worker discarded " UINT64_FORMAT
                         " usage events of a former installation of the extension",
                         foreign)));
  if (inserted + result.dead_letters < static_cast<uint64>(rows))
    ereport(LOG, (errmsg("rate_limiter worker skipped " UINT64_FORMAT
                         " usage events whose id was already in token_usage",
                         static_cast<uint64>(rows) - inserted - result.dead_letters)));
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
    if (r.database != target.database ||
        (OidIsValid(r.extension) && r.extension != target.extension)) {
      ++foreign;
      continue;
    }
    bool null_scope = false;
    const char* scope = alert_scope_text(r);
    columns[0][rows] = CStringGetTextDatum(alert_kind_text(r));
    columns[1][rows] =
        text_or_null(r.user_len >= 0 ? r.user : nullptr, r.user_len, &nulls[1][rows]);
    columns[2][rows] =
        text_or_null(r.endpoint_len >= 0 ? r.endpoint : nullptr, r.endpoint_len, &nulls[2][rows]);
    columns[3][rows] =
        text_or_null(scope, scope != nullptr ? static_cast<int>(strlen(scope)) : 0, &null_scope);
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
    ereport(DEBUG1,
            (errmsg("rate_limiter worker dropped " UINT64_FORMAT " alerts of a former installation",
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
    return r.database == target.database &&
           (r.extension == target.extension || !OidIsValid(r.extension));
  });
}

}  // namespace rate_limiter::pg
