#include "rate_limiter/pg/workers/database_commands.hpp"

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/workers/database_worker.hpp"
#include "rate_limiter/pg/workers/launcher.hpp"

namespace rate_limiter::pg {
namespace {

// As long as the server itself waits for the other sessions of a dropped
// database (CountOtherDBBackends): the worker's batch under way is shorter.
constexpr long kStopWaitMs = 5000;

ProcessUtility_hook_type previous_utility_hook = nullptr;
bool blocking = false;                                        // this transaction blocked some slots
SubTransactionId blocking_subxact = InvalidSubTransactionId;  // ... from this subtransaction on

Oid database_named(const char* name) {
  return name != nullptr ? get_database_oid(name, true) : InvalidOid;
}

bool owns(Oid database) {
  return OidIsValid(database) && pg_database_ownercheck(database, GetUserId());
}

bool is_template(Oid database) {
  HeapTuple tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(database));
  if (!HeapTupleIsValid(tuple)) return false;
  const bool result = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple))->datistemplate;
  ReleaseSysCache(tuple);
  return result;
}

// The database a statement needs without other sessions; InvalidOid for
// any other statement, and for one that the server will refuse anyway:
// the caller lacks the privilege, or the command cannot run in a
// transaction block and this is one.  (Otherwise any role could keep a
// database's worker away by issuing a failing DROP DATABASE.)
Oid database_to_clear(Node* stmt) {
  switch (nodeTag(stmt)) {
    case T_DropdbStmt: {
      const Oid db = database_named(reinterpret_cast<DropdbStmt*>(stmt)->dbname);
      return !IsTransactionBlock() && owns(db) ? db : InvalidOid;
    }
    case T_RenameStmt: {
      auto* rename = reinterpret_cast<RenameStmt*>(stmt);
      if (rename->renameType != OBJECT_DATABASE) return InvalidOid;
      const Oid db = database_named(rename->subname);
      return owns(db) && have_createdb_privilege() ? db : InvalidOid;
    }
    case T_AlterDatabaseStmt: {
      auto* alter = reinterpret_cast<AlterDatabaseStmt*>(stmt);
      ListCell* cell;
      foreach (cell, alter->options) {
        auto* option = static_cast<DefElem*>(lfirst(cell));
        if (strcmp(option->defname, "tablespace") == 0) {
          const Oid db = database_named(alter->dbname);
          return !IsTransactionBlock() && owns(db) ? db : InvalidOid;
        }
      }
      return InvalidOid;
    }
    case T_CreatedbStmt: {
      auto* create = reinterpret_cast<CreatedbStmt*>(stmt);
      const char* source = "template1";
      ListCell* cell;
      foreach (cell, create->options) {
        auto* option = static_cast<DefElem*>(lfirst(cell));
        if (strcmp(option->defname, "template") == 0 && option->arg != nullptr)
          source = defGetString(option);
      }
      const Oid db = database_named(source);
      // createdb() copies a database that is a template, or one the caller owns.
      const bool allowed =
          have_createdb_privilege() && (owns(db) || (OidIsValid(db) && is_template(db)));
      return !IsTransactionBlock() && allowed ? db : InvalidOid;
    }
    default:
      return InvalidOid;
  }
}

bool in_database(const InstallationSlot& s, Oid database) {
  return s.installation != 0 && static_cast<Oid>(s.installation >> 32) == database;
}

bool workers_gone(Oid database) {
  InstallationSlot* slots = installation_slots();
  bool gone = true;
  LWLockAcquire(installations_lock(), LW_SHARED);
  for (int i = 0; i < installation_slot_count() && gone; ++i)
    if (in_database(slots[i], database) && slots[i].worker_pid != 0) gone = false;
  LWLockRelease(installations_lock());
  return gone;
}

void keep_workers_away(Oid database) {
  InstallationSlot* slots = installation_slots();
  bool any = false;
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  for (int i = 0; i < installation_slot_count(); ++i) {
    if (!in_database(slots[i], database)) continue;
    slots[i].worker_blocked_by = MyProcPid;
    any = true;
  }
  LWLockRelease(installations_lock());
  if (!any) return;
  if (!blocking) blocking_subxact = GetCurrentSubTransactionId();
  blocking = true;
  for (int i = 0; i < installation_slot_count(); ++i)
    if (in_database(slots[i], database)) wake_installation_worker(i);
  // Interruptible.  At the deadline the command goes on and, should the
  // worker still be there, fails as it would have without this hook.
  (void)wait_for_installation_change(
      TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kStopWaitMs),
      [&] { return workers_gone(database); });
}

void on_utility(PlannedStmt* pstmt, const char* query, bool read_only_tree,
                ProcessUtilityContext context, ParamListInfo params, QueryEnvironment* env,
                DestReceiver* dest, QueryCompletion* qc) {
  if (shared != nullptr) {
    const Oid database = database_to_clear(pstmt->utilityStmt);
    if (OidIsValid(database)) keep_workers_away(database);
  }
  if (previous_utility_hook != nullptr)
    previous_utility_hook(pstmt, query, read_only_tree, context, params, env, dest, qc);
  else
    standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc);
}

void release_workers() {
  InstallationSlot* slots = installation_slots();
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  for (int i = 0; i < installation_slot_count(); ++i)
    if (slots[i].worker_blocked_by == MyProcPid) slots[i].worker_blocked_by = 0;
  LWLockRelease(installations_lock());
  blocking = false;
  blocking_subxact = InvalidSubTransactionId;
  wake_launcher();
}

void on_xact_event(XactEvent event, void*) {
  if (!blocking) return;
  if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT && event != XACT_EVENT_PREPARE)
    return;
  release_workers();
}

// A rolled-back subtransaction took the statement that blocked the
// workers with it (ALTER DATABASE ... RENAME can run inside one).
void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event == SUBXACT_EVENT_ABORT_SUB && blocking && blocking_subxact >= subxact)
    release_workers();
}

}  // namespace

void register_database_command_hook() {
  previous_utility_hook = ProcessUtility_hook;
  ProcessUtility_hook = on_utility;
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

}  // namespace rate_limiter::pg
