#include "rate_limiter/pg/workers/database_worker.hpp"

#include "rate_limiter/pg/alerts.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"
#include "rate_limiter/pg/workers/launcher.hpp"
#include "rate_limiter/pg/workers/queue_flush.hpp"
#include "rate_limiter/pg/workers/upkeep.hpp"

extern "C" {
PGDLLEXPORT void rate_limiter_database_worker_main(Datum);
}

namespace rate_limiter::pg {
namespace {

// Upkeep (upkeep.hpp) at most this often, and at once after a start.
constexpr long kUpkeepIntervalMs = 10000;
// Wait before retrying after an error (the events stay queued).
constexpr long kErrorBackoffMs = 1000;
// How long a new worker waits for a former consumer of its streams (a
// worker of the slot's former installation, about to exit) to let go.
constexpr long kConsumerWaitMs = 5000;
// The final flush at SIGTERM: rounds until the streams stay empty.
constexpr int kFinalFlushRounds = 3;

WorkerTarget self;
bool claimed = false;
bool planned_exit = false;
bool extension_gone = false;

// While true, SIGTERM also cancels the statement under way: upkeep and
// retention statements (and a rule load or counter rebuild they start) are
// long and can be redone, a flush batch is short and finishes.
volatile sig_atomic_t cancel_on_shutdown = false;

void on_sigterm(int) {
  const int saved_errno = errno;
  ShutdownRequestPending = true;
  if (cancel_on_shutdown) {
    InterruptPending = true;
    QueryCancelPending = true;
  }
  SetLatch(MyLatch);
  errno = saved_errno;
}

bool backend_alive(int32 pid) { return pid != 0 && BackendPidGetProc(pid) != nullptr; }

// A dead backend's block (it cannot have ended its transaction normally
// without clearing it, but a crash of the postmaster's children resets
// shared memory anyway): cleared so that nobody waits on it.
void clear_stale_block(InstallationSlot* slot, int32 pid) {
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  if (slot->worker_blocked_by == pid) slot->worker_blocked_by = 0;
  LWLockRelease(installations_lock());
}

// Under the registry lock: this worker serves the slot from now on.
bool claim_slot() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    int32 blocker = 0;
    bool ok = false;
    LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
    InstallationSlot* s = self.slot;
    if (s->installation == self.installation && !s->dropping) {
      if (s->worker_blocked_by != 0) {
        blocker = s->worker_blocked_by;
        // Started just before the block: back at once after it.
        s->worker_exit = static_cast<uint32>(WorkerExit::Planned);
      } else if (s->worker_pid == 0) {
        s->worker_pid = MyProcPid;
        ok = true;
      }
    }
    LWLockRelease(installations_lock());
    if (ok) return true;
    // Not checked under the registry lock: ProcArrayLock is another lock.
    if (blocker == 0 || backend_alive(blocker)) return false;
    clear_stale_block(self.slot, blocker);
  }
  return false;
}

enum class Stop { None, Reclaimed, Blocked };

Stop stop_reason() {
  LWLockAcquire(installations_lock(), LW_SHARED);
  const bool same = self.slot->installation == self.installation && !self.slot->dropping;
  const int32 blocker = self.slot->worker_blocked_by;
  LWLockRelease(installations_lock());
  if (!same) return Stop::Reclaimed;
  if (blocker != 0) {
    if (backend_alive(blocker)) return Stop::Blocked;
    clear_stale_block(self.slot, blocker);
  }
  return Stop::None;
}

bool stop_now() { return ShutdownRequestPending || stop_reason() != Stop::None; }

void on_worker_exit(int, Datum) {
  LWLockReleaseAll();
  usage_queue_pool().detach_consumer(self.stream);
  alert_queue_pool().detach_consumer(self.stream);
  if (!claimed) return;
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  InstallationSlot* s = self.slot;
  if (s->installation == self.installation && s->worker_pid == MyProcPid) {
    s->worker_pid = 0;
    s->worker_exit = static_cast<uint32>(planned_exit ? WorkerExit::Planned : WorkerExit::Unknown);
    if (extension_gone) s->worker_gone_at = s->last_used;
  }
  LWLockRelease(installations_lock());
  ConditionVariableBroadcast(installations_changed());
  wake_launcher();
}

bool attach_streams() {
  const TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kConsumerWaitMs);
  for (;;) {
    if (usage_queue_pool().attach_consumer(self.stream, MyLatch) &&
        alert_queue_pool().attach_consumer(self.stream, MyLatch))
      return true;
    if (GetCurrentTimestamp() >= deadline || ShutdownRequestPending) return false;
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
                    PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
  }
}

// Whether the database still takes a worker (it may have turned into a
// template or stopped accepting connections); in a transaction.
bool still_served() {
  StartTransactionCommand();
  const bool served = database_can_be_served(self.database, nullptr);
  CommitTransactionCommand();
  return served;
}

void flush_queues() {
  // Up to what is queued now: producers faster than the worker must not
  // starve the upkeep.
  const uint64 end = usage_queue_pool().window(self.stream).head;
  while (!extension_gone && flush_usage_batch(self, end, &extension_gone)) {
    CHECK_FOR_INTERRUPTS();
    if (stop_reason() != Stop::None) return;
  }
  const uint64 alerts_end = alert_queue_pool().window(self.stream).head;
  while (!extension_gone && flush_alert_batch(self, alerts_end, &extension_gone))
    CHECK_FOR_INTERRUPTS();
}

// Runs `work`; an ERROR is logged (a statement cancelled by SIGTERM
// quietly) and rolled back here: false then.
template <typename Work>
bool guarded(Work work) {
  MemoryContext outer = CurrentMemoryContext;
  volatile bool ok = true;
  PG_TRY();
  { work(); }
  PG_CATCH();
  {
    cancel_on_shutdown = false;
    MemoryContextSwitchTo(outer);
    ErrorData* error = CopyErrorData();
    HOLD_INTERRUPTS();
    if (!(ShutdownRequestPending && error->sqlerrcode == ERRCODE_QUERY_CANCELED)) EmitErrorReport();
    AbortCurrentTransaction();
    FlushErrorState();
    RESUME_INTERRUPTS();
    pgstat_report_activity(STATE_IDLE, nullptr);
    ok = false;
  }
  PG_END_TRY();
  MemoryContextSwitchTo(outer);
  return ok;
}

// The flush of both queues; false after an error (retried after the
// backoff: the events stay queued).
bool flush_cycle(bool stopping) {
  return guarded([&] {
    if (RecoveryInProgress()) return;
    // The lag before this flush: what callers have been seeing.
    const int64 lag_ms = usage_queue_lag_ms(self.stream);
    if (!stopping && settings.alert_flush_lag_ms > 0 && lag_ms > settings.alert_flush_lag_ms)
      raise_flush_lag_alert(self.stream, self.database, self.extension, lag_ms,
                            settings.alert_flush_lag_ms, limiter_now_unix());
    flush_queues();
  });
}

// Upkeep; an error only postpones it to the next interval, it never slows
// the flush down.
void upkeep_cycle(bool* retention_behind) {
  const bool ok = guarded([&] {
    if (RecoveryInProgress() || extension_gone || stop_now()) return;
    cancel_on_shutdown = true;
    if (ShutdownRequestPending) {  // a SIGTERM just before the flag was set
      InterruptPending = true;
      QueryCancelPending = true;
    }
    *retention_behind = run_upkeep(self, stop_now, &extension_gone);
    cancel_on_shutdown = false;
    if (!extension_gone && !still_served()) planned_exit = true;
  });
  cancel_on_shutdown = false;
  // A cancel meant for an upkeep statement must not hit the final flush.
  QueryCancelPending = false;
  if (!ok) *retention_behind = false;
}

void serve(MemoryContext loop_context) {
  TimestampTz last_upkeep = 0;  // 0: at once after a start
  TimestampTz retry_at = 0;     // after an error: no work before then
  bool retention_behind = false;
  for (;;) {
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
    const Stop stop = stop_reason();
    if (stop != Stop::None) {
      // Reclaimed: what its installation left queued cannot be written.
      // Blocked: the events stay queued for the worker after the command.
      if (stop == Stop::Reclaimed) drop_installation_records(self);
      planned_exit = true;
      return;
    }
    const bool stopping = ShutdownRequestPending;
    const TimestampTz now = GetCurrentTimestamp();
    long sleep_ms = settings.flush_interval_ms;
    // Waiters set the latch often; the backoff still holds for them.
    if (!stopping && now < retry_at) {
      sleep_ms = Max(TimestampDifferenceMilliseconds(now, retry_at), 1);
    } else {
      const bool upkeep =
          !stopping && (retention_behind || last_upkeep == 0 || flushed_scopes_full() ||
                        TimestampDifferenceExceeds(last_upkeep, now, kUpkeepIntervalMs));
      MemoryContextSwitchTo(loop_context);
      bool ok = flush_cycle(stopping);
      // The final flush: again while callers still queue (a smart
      // shutdown lets sessions finish first; a fast one ends them).
      for (int round = 1; stopping && ok && round < kFinalFlushRounds; ++round) {
        if (usage_queue_pool().stream_records(self.stream) == 0 &&
            alert_queue_pool().stream_records(self.stream) == 0)
          break;
        ok = flush_cycle(true);
      }
      if (upkeep && ok) {
        upkeep_cycle(&retention_behind);
        last_upkeep = now;
      }
      MemoryContextReset(loop_context);
      if (!ok) {
        retry_at = TimestampTzPlusMilliseconds(now, kErrorBackoffMs);
        sleep_ms = kErrorBackoffMs;
      }
    }
    if (extension_gone || planned_exit) {
      planned_exit = true;
      return;
    }
    if (stopping) return;
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, sleep_ms,
                    PG_WAIT_EXTENSION);
  }
}

}  // namespace

void describe_database_worker(BackgroundWorker* worker, int index, uint64 installation,
                              const char* database_name) {
  memset(worker, 0, sizeof *worker);
  worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
  // The launcher restarts it, with its own backoff (launcher.hpp).
  worker->bgw_restart_time = BGW_NEVER_RESTART;
  strlcpy(worker->bgw_library_name, "rate_limiter", BGW_MAXLEN);
  strlcpy(worker->bgw_function_name, "rate_limiter_database_worker_main", BGW_MAXLEN);
  snprintf(worker->bgw_name, BGW_MAXLEN, "%s for database \"%s\"", kDatabaseWorkerType,
           database_name);
  strlcpy(worker->bgw_type, kDatabaseWorkerType, BGW_MAXLEN);
  worker->bgw_main_arg = Int32GetDatum(index);
  static_assert(sizeof installation <= BGW_EXTRALEN);
  memcpy(worker->bgw_extra, &installation, sizeof installation);
  worker->bgw_notify_pid = MyProcPid;
}

void release_installation_worker(InstallationSlot* slot) noexcept {
  const int index = installation_index(slot);
  // discard() refuses while a worker consumes the stream: that worker
  // drops them itself when it sees its slot reclaimed.
  (void)usage_queue_pool().discard(index);
  (void)alert_queue_pool().discard(index);
  wake_installation_worker(index);
}

void wake_installation_worker(int index) noexcept {
  if (Latch* latch = usage_queue_pool().consumer_latch(index)) SetLatch(latch);
}

}  // namespace rate_limiter::pg

using namespace rate_limiter::pg;

void rate_limiter_database_worker_main(Datum arg) {
  const int index = DatumGetInt32(arg);
  if (index < 0 || index >= installation_slot_count()) proc_exit(0);
  memcpy(&self.installation, MyBgworkerEntry->bgw_extra, sizeof self.installation);
  self.stream = index;
  self.database = static_cast<Oid>(self.installation >> 32);
  self.extension = static_cast<Oid>(self.installation & 0xffffffffu);
  self.slot = &installation_slots()[index];

  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  // Not die(): SIGTERM only sets a flag (and cancels a long upkeep
  // statement), so the loop can write what is queued before it exits.
  pqsignal(SIGTERM, on_sigterm);
  BackgroundWorkerUnblockSignals();

  // Before connecting: a worker that may not run must not even appear in
  // its database (DROP DATABASE counts the sessions there).  Registered
  // before the connection, so that the connection's own exit callback
  // (which releases its locks) runs first.
  before_shmem_exit(on_worker_exit, (Datum)0);
  claimed = claim_slot();
  if (!claimed) {
    planned_exit = true;
    proc_exit(0);
  }
  if (!attach_streams()) {
    ereport(
        LOG,
        (errmsg("rate_limiter worker for database %u: another process still consumes its queues",
                self.database)));
    proc_exit(1);
  }
  BackgroundWorkerInitializeConnectionByOid(self.database, InvalidOid, 0);
  pgstat_report_appname(kDatabaseWorkerType);
  MemoryContext loop_context = AllocSetContextCreate(
      TopMemoryContext, "rate_limiter database worker", ALLOCSET_DEFAULT_SIZES);
  serve(loop_context);
  proc_exit(0);
}
