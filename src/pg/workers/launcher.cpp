#include "rate_limiter/pg/workers/launcher.hpp"

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/workers/database_worker.hpp"

extern "C" {
PGDLLEXPORT void rate_limiter_launcher_main(Datum);
}

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter launcher";
// The postmaster restarts a crashed launcher after this many seconds.
constexpr int kLauncherRestartSeconds = 5;
// How often the launcher looks at the registry without being woken: new
// installations registered by a first call are seen within this.
constexpr long kLauncherPollMs = 1000;
// Restart delays of a worker that stopped unasked, and the run time after
// which a stop no longer counts as a quick failure.
constexpr long kRestartBaseMs = 5000;
constexpr long kRestartMaxMs = 60000;
constexpr long kStableRunMs = 60000;
// How often a database that cannot be served is looked at again, and a
// start is retried when no background worker slot was free.
constexpr long kIneligibleRecheckMs = 10000;
constexpr long kNoWorkerSlotRetryMs = 10000;

struct LauncherShared {
  slock_t mutex;
  Latch* latch;  // nullptr while no launcher runs
};
LauncherShared* launcher = nullptr;

// The launcher's own view of one registry slot.
struct Served {
  uint64 installation;             // what the slot held when last looked at
  BackgroundWorkerHandle* handle;  // the worker it started; nullptr: none
  TimestampTz started_at;
  TimestampTz retry_at;  // no start before
  int failures;          // quick unasked stops in a row
  bool warned;           // "no background worker slot" logged
};
Served* served = nullptr;
MemoryContext handle_context = nullptr;

// A copy of a slot's fields, taken under the registry lock.
struct SlotView {
  uint64 installation;
  bool dropping;
  int32 worker_pid;
  int32 blocked_by;
  uint32 worker_exit;
  uint64 last_used;
  uint64 gone_at;
};

SlotView view_of(InstallationSlot* s) {
  LWLockAcquire(installations_lock(), LW_SHARED);
  const SlotView v{s->installation, s->dropping != 0, s->worker_pid,    s->worker_blocked_by,
                   s->worker_exit,  s->last_used,     s->worker_gone_at};
  LWLockRelease(installations_lock());
  return v;
}

bool wanted(const SlotView& v) {
  if (v.installation == 0 || v.dropping) return false;
  if (v.gone_at != 0 && v.gone_at == v.last_used) return false;
  // Checked after the registry lock is gone: ProcArrayLock is another lock.
  if (v.blocked_by != 0 && BackendPidGetProc(v.blocked_by) != nullptr) return false;
  return true;
}

void forget(Served* w, uint64 installation) {
  // A worker of the former installation exits by itself (its slot changed).
  if (w->handle != nullptr) pfree(w->handle);
  memset(w, 0, sizeof *w);
  w->installation = installation;
}

void on_stopped(Served* w, const SlotView& v, TimestampTz now) {
  if (v.worker_exit == static_cast<uint32>(WorkerExit::Planned)) {
    w->failures = 0;
    w->retry_at = now;
    return;
  }
  w->failures = TimestampDifferenceExceeds(w->started_at, now, kStableRunMs) ? 1 : w->failures + 1;
  const long delay = Min(kRestartBaseMs << Min(w->failures - 1, 8), kRestartMaxMs);
  w->retry_at = TimestampTzPlusMilliseconds(now, delay);
}

void start(Served* w, int index, InstallationSlot* slot, TimestampTz now) {
  const Oid database = static_cast<Oid>(w->installation >> 32);
  NameData name;
  StartTransactionCommand();
  const bool eligible = database_can_be_served(database, &name);
  CommitTransactionCommand();
  if (!eligible) {
    w->retry_at = TimestampTzPlusMilliseconds(now, kIneligibleRecheckMs);
    return;
  }
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  const bool same = slot->installation == w->installation;
  if (same) slot->worker_exit = static_cast<uint32>(WorkerExit::Unknown);
  LWLockRelease(installations_lock());
  if (!same) return;
  BackgroundWorker worker;
  describe_database_worker(&worker, index, w->installation, NameStr(name));
  MemoryContext outer = MemoryContextSwitchTo(handle_context);
  BackgroundWorkerHandle* handle = nullptr;
  const bool registered = RegisterDynamicBackgroundWorker(&worker, &handle);
  MemoryContextSwitchTo(outer);
  if (registered) {
    w->handle = handle;
    w->started_at = now;
    w->warned = false;
    return;
  }
  w->retry_at = TimestampTzPlusMilliseconds(now, kNoWorkerSlotRetryMs);
  if (!w->warned)
    ereport(
        WARNING,
        (errmsg("rate_limiter: no background worker slot for the worker of database \"%s\"",
                NameStr(name)),
         errdetail("Its usage rows are written synchronously once its share of the queue is full, "
                   "and its "
                   "alerts are dropped."),
         errhint(
             "Raise max_worker_processes: rate_limiter takes one slot for its launcher and one per "
             "database where the extension is installed.")));
  w->warned = true;
}

// One look at every slot; lowers *sleep_ms to the next retry due.
void launcher_pass(long* sleep_ms) {
  const TimestampTz now = GetCurrentTimestamp();
  InstallationSlot* slots = installation_slots();
  for (int i = 0; i < installation_slot_count(); ++i) {
    const SlotView v = view_of(&slots[i]);
    Served* w = &served[i];
    if (w->installation != v.installation) forget(w, v.installation);
    if (v.installation == 0) continue;
    bool running = false;
    if (w->handle != nullptr) {
      pid_t pid = 0;
      if (GetBackgroundWorkerPid(w->handle, &pid) == BGWH_STOPPED) {
        on_stopped(w, v, now);
        pfree(w->handle);
        w->handle = nullptr;
      } else {
        running = true;
      }
    }
    // A worker started by an earlier launcher (this one restarted).
    if (v.worker_pid != 0) running = true;
    if (running || !wanted(v)) continue;
    if (now < w->retry_at) {
      *sleep_ms = Min(*sleep_ms, Max(TimestampDifferenceMilliseconds(now, w->retry_at), 1));
      continue;
    }
    start(w, i, &slots[i], now);
  }
}

void unpublish(int, Datum) {
  SpinLockAcquire(&launcher->mutex);
  if (launcher->latch == MyLatch) launcher->latch = nullptr;
  SpinLockRelease(&launcher->mutex);
}

// A CREATE EXTENSION / ALTER EXTENSION UPDATE of this transaction
// registered its installation: at commit, the installation is confirmed
// (a worker that started too early and found no extension is wanted again)
// and the launcher starts its worker at once.
InstallationSlot* confirmed_slot = nullptr;
uint64 confirmed_installation = 0;

void on_xact_event(XactEvent event, void*) {
  if (confirmed_slot == nullptr) return;
  if (event == XACT_EVENT_COMMIT) {
    LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
    if (confirmed_slot->installation == confirmed_installation) confirmed_slot->worker_gone_at = 0;
    LWLockRelease(installations_lock());
    wake_launcher();
  }
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE) {
    confirmed_slot = nullptr;
    confirmed_installation = 0;
  }
}

}  // namespace

void register_launcher() {
  BackgroundWorker worker;
  memset(&worker, 0, sizeof worker);
  // A database connection of its own kind: to none, for pg_database.
  worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
  worker.bgw_restart_time = kLauncherRestartSeconds;
  strlcpy(worker.bgw_library_name, "rate_limiter", BGW_MAXLEN);
  strlcpy(worker.bgw_function_name, "rate_limiter_launcher_main", BGW_MAXLEN);
  strlcpy(worker.bgw_name, kLauncherType, BGW_MAXLEN);
  strlcpy(worker.bgw_type, kLauncherType, BGW_MAXLEN);
  RegisterBackgroundWorker(&worker);
  RegisterXactCallback(on_xact_event, nullptr);
}

SegmentRequest launcher_segment() {
  return {kSegmentName, MAXALIGN(sizeof(LauncherShared)), nullptr, 0};
}

void attach_launcher_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  launcher =
      static_cast<LauncherShared*>(ShmemInitStruct(kSegmentName, sizeof(LauncherShared), &found));
  if (!found) {
    SpinLockInit(&launcher->mutex);
    launcher->latch = nullptr;
  }
  LWLockRelease(AddinShmemInitLock);
}

void wake_launcher() noexcept {
  if (launcher == nullptr) return;
  SpinLockAcquire(&launcher->mutex);
  Latch* latch = launcher->latch;
  SpinLockRelease(&launcher->mutex);
  if (latch != nullptr) SetLatch(latch);
}

bool database_can_be_served(Oid database, NameData* name) {
  Relation rel = table_open(DatabaseRelationId, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, Anum_pg_database_oid, BTEqualStrategyNumber, F_OIDEQ,
              ObjectIdGetDatum(database));
  // A heap scan: a process connected to no database has no relcache entry
  // of pg_database's indexes (and could not build one).
  SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 1, &key);
  bool ok = false;
  HeapTuple tuple = systable_getnext(scan);
  if (HeapTupleIsValid(tuple)) {
    auto* form = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
    const bool named = settings.usage_database == nullptr || settings.usage_database[0] == '\0' ||
                       strcmp(NameStr(form->datname), settings.usage_database) == 0;
    ok = named && !form->datistemplate && form->datallowconn && !database_is_invalid_form(form);
    if (name != nullptr) *name = form->datname;
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return ok;
}

}  // namespace rate_limiter::pg

using namespace rate_limiter::pg;

void rate_limiter_launcher_main(Datum) {
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
  BackgroundWorkerUnblockSignals();
  // No database: only shared catalogs, and no session in any database
  // (DROP DATABASE never waits for it).
  BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
  pgstat_report_appname(kLauncherType);
  handle_context =
      AllocSetContextCreate(TopMemoryContext, "rate_limiter launcher", ALLOCSET_DEFAULT_SIZES);
  served = static_cast<Served*>(MemoryContextAllocZero(
      handle_context, sizeof(Served) * static_cast<Size>(installation_slot_count())));
  SpinLockAcquire(&launcher->mutex);
  launcher->latch = MyLatch;
  SpinLockRelease(&launcher->mutex);
  before_shmem_exit(unpublish, (Datum)0);
  for (;;) {
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    if (ShutdownRequestPending) break;
    long sleep_ms = kLauncherPollMs;
    launcher_pass(&sleep_ms);
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms,
                    PG_WAIT_EXTENSION);
  }
  // Exit status 1: the postmaster restarts the launcher, unless the server
  // is shutting down.  Its workers keep running meanwhile.
  proc_exit(1);
}

// CREATE EXTENSION and ALTER EXTENSION UPDATE call this from the update
// script: the installation is registered now and gets its worker as soon as
// the transaction commits.
RL_SQL_FUNCTION(rate_limiter_serve_database) {
  require_shared_state();
  const ExtensionCatalog* ext = extension_catalog();
  confirmed_slot = ext->slot;
  confirmed_installation = ext->installation;
  PG_RETURN_VOID();
}
