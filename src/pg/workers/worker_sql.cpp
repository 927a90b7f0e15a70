#include "rate_limiter/pg/workers/worker_sql.hpp"

#include "rate_limiter/pg/workers/reclaim.hpp"

namespace rate_limiter::pg {
namespace {

// The memory context current before the transaction: commit leaves
// TopMemoryContext current, and the worker's loop allocates in its own.
MemoryContext outer_context = nullptr;

}  // namespace

void begin_worker_transaction(const char* activity) {
  outer_context = CurrentMemoryContext;
  SetCurrentStatementStartTimestamp();
  StartTransactionCommand();
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter worker: SPI_connect failed");
  PushActiveSnapshot(GetTransactionSnapshot());
  pgstat_report_activity(STATE_RUNNING, activity);
}

void commit_worker_transaction() {
  SPI_finish();
  PopActiveSnapshot();
  CommitTransactionCommand();
  pgstat_report_activity(STATE_IDLE, nullptr);
  if (outer_context != nullptr) MemoryContextSwitchTo(outer_context);
}

const ExtensionCatalog* worker_catalog(const WorkerTarget& target, bool* gone) {
  if (get_extension_oid("rate_limiter", true) != target.extension) {
    *gone = true;
    return nullptr;
  }
  // An installation not updated to the library's version yet is left alone
  // until ALTER EXTENSION rate_limiter UPDATE (its functions raise an error
  // that says so, so nothing of it is queued).
  if (!extension_is_current()) return nullptr;
  const ExtensionCatalog* ext = extension_catalog();
  if (ext->slot != target.slot) {
    // The slot was reclaimed between the lookup above and the registration
    // extension_catalog() made (a DROP EXTENSION committing just then): the
    // registration took a new slot for a dropped installation.  Give it
    // back; this worker is done.
    if (ext->installation == target.installation) reclaim_installation(ext->slot);
    *gone = true;
    return nullptr;
  }
  return ext;
}

Datum array_of(Datum* values, bool* nulls, int n, Oid element_type) {
  int16 length;
  bool by_value;
  char align;
  get_typlenbyvalalign(element_type, &length, &by_value, &align);
  int dims[1] = {n};
  int lower_bounds[1] = {1};
  return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lower_bounds, element_type,
                                            length, by_value, align));
}

Datum text_or_null(const char* bytes, int length, bool* is_null) {
  *is_null = bytes == nullptr;
  return bytes == nullptr ? (Datum)0 : PointerGetDatum(cstring_to_text_with_len(bytes, length));
}

}  // namespace rate_limiter::pg
