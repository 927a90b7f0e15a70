#include "rate_limiter/pg/usage_log.hpp"

#include "rate_limiter/pg/extension_catalog.hpp"

namespace rate_limiter::pg {
namespace {

SPIPlanPtr insert_plan = nullptr;
bool insert_plan_stale = false;

void forget_plan() {
  // Called from an invalidation callback: only mark; free at next use.
  if (insert_plan != nullptr) insert_plan_stale = true;
}

SPIPlanPtr prepare_insert(const ExtensionCatalog* ext) {
  if (insert_plan != nullptr && insert_plan_stale) {
    SPI_freeplan(insert_plan);
    insert_plan = nullptr;
    insert_plan_stale = false;
  }
  if (insert_plan != nullptr) return insert_plan;
  char sql[512];
  snprintf(sql, sizeof sql,
           "INSERT INTO %s.token_usage "
           "(user_id, session_id, tokens_used, api_endpoint, priority_level, \"timestamp\") "
           "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
           ext->quoted_schema);
  Oid types[6] = {TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
  SPIPlanPtr plan = SPI_prepare(sql, 6, types);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the usage insert");
  if (SPI_keepplan(plan) != 0) elog(ERROR, "rate_limiter: could not save the usage insert");
  insert_plan = plan;
  return plan;
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

int64 write_usage_row(const UsageRow& row) {
  const ExtensionCatalog* ext = extension_catalog();
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = prepare_insert(ext);
  Datum values[6];
  char nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
  values[0] = PointerGetDatum(row.user->datum);
  if (row.session->present) values[1] = PointerGetDatum(row.session->datum); else nulls[1] = 'n';
  values[2] = Int64GetDatum(row.tokens);
  if (row.endpoint->present) values[3] = PointerGetDatum(row.endpoint->datum); else nulls[3] = 'n';
  if (row.priority != nullptr) values[4] = CStringGetTextDatum(row.priority); else nulls[4] = 'n';
  values[5] = TimestampTzGetDatum(row.at);
  int rc = SPI_execute_plan(plan, values, nulls, false, 0);
  if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
    elog(ERROR, "rate_limiter: usage insert failed: %s", SPI_result_code_string(rc));
  bool isnull = false;
  const int64 id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  SPI_finish();
  owner.restore();
  return id;
}

void register_usage_log_reset() { on_extension_catalog_reset(forget_plan); }

}  // namespace rate_limiter::pg
