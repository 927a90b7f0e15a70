// What a database's worker (database_worker.hpp) needs around its SQL:
// which installation it serves, its transactions, and array arguments.
#pragma once

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// The installation a worker serves, fixed for the worker's life: a worker
// whose slot changes occupant (DROP EXTENSION, DROP DATABASE) exits.
struct WorkerTarget {
  int stream;           // the slot's index: its queue streams
  uint64 installation;  // database OID << 32 | extension OID
  Oid database;
  Oid extension;
  InstallationSlot* slot;
};

// One transaction with SPI and a snapshot, reported in pg_stat_activity.
// The commit makes the memory context current at the begin current again.
void begin_worker_transaction(const char* activity);
void commit_worker_transaction();

// Inside a worker transaction: the catalog of the served installation, or
// nullptr (and *gone set) when the extension is no longer installed in the
// database as this installation (dropped, or dropped and created again).
const ExtensionCatalog* worker_catalog(const WorkerTarget& target, bool* gone);

// A one-dimensional array of n values of element_type (palloc'd).
Datum array_of(Datum* values, bool* nulls, int n, Oid element_type);
// A text datum, or NULL when bytes is nullptr.
Datum text_or_null(const char* bytes, int length, bool* is_null);

}  // namespace rate_limiter::pg
