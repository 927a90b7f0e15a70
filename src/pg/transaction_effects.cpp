#include "rate_limiter/pg/transaction_effects.hpp"

#include "rate_limiter/pg/partition_locks.hpp"
#include "rate_limiter/pg/postgres.hpp"
#include "rate_limiter/pg/rule_cache.hpp"
#include "rate_limiter/pg/shared_state.hpp"

namespace rate_limiter::pg {
namespace {

struct PendingReset {
  core::Hash128 key;
  SubTransactionId subxact;
};

bool rules_changed = false;
PendingReset* pending = nullptr;  // in TopTransactionContext
int pending_count = 0;
int pending_capacity = 0;

void forget_transaction_state() {
  rules_changed = false;
  pending = nullptr;  // its memory goes with TopTransactionContext
  pending_count = 0;
  pending_capacity = 0;
}

// Runs inside the commit callback, where nothing may fail: plain blocking
// LWLock waits (no timeout path that would need an ereport) and stores.
void apply_pending_resets() {
  for (int i = 0; i < pending_count; ++i) {
    const core::Hash128& key = pending[i].key;
    const uint32 p = core::partition_of(key, shared->geometry.partitions);
    LWLockAcquire(partition_lock(p), LW_EXCLUSIVE);
    if (core::CounterSlot* slot = counter_partition(p).find(key)) slot->state.used = 0;
    LWLockRelease(partition_lock(p));
  }
}

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      if (rules_changed || pending_count > 0)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot PREPARE a transaction that changed rate limits or reset "
                               "rate limit counters")));
      break;
    case XACT_EVENT_COMMIT:
      if (rules_changed) {
        pg_atomic_fetch_add_u64(&shared->rules_generation, 1);
        invalidate_rule_cache();
      }
      if (pending_count > 0) apply_pending_resets();
      forget_transaction_state();
      break;
    case XACT_EVENT_ABORT:
      // The cache may hold this transaction's own uncommitted rules.
      if (rules_changed) invalidate_rule_cache();
      forget_transaction_state();
      break;
    case XACT_EVENT_PREPARE:
      // Only reachable with nothing pending (PRE_PREPARE refuses otherwise),
      // but the array may still point into TopTransactionContext, which is
      // about to go away.
      forget_transaction_state();
      break;
    default:
      break;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event != SUBXACT_EVENT_ABORT_SUB) return;
  // Subtransaction ids grow; every subtransaction begun since `subxact` is
  // one of its descendants, so drop every reset recorded since.
  int kept = 0;
  for (int i = 0; i < pending_count; ++i)
    if (pending[i].subxact < subxact) pending[kept++] = pending[i];
  pending_count = kept;
  if (rules_changed) invalidate_rule_cache();
}

}  // namespace

void register_transaction_callbacks() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

void note_rule_change() {
  rules_changed = true;
  // Make this session's own next call see its uncommitted change.
  invalidate_rule_cache();
}

void schedule_counter_reset(const core::Hash128& counter_key) {
  if (pending_count == pending_capacity) {
    const int capacity = pending_capacity == 0 ? 16 : pending_capacity * 2;
    pending = static_cast<PendingReset*>(
        pending == nullptr ? MemoryContextAlloc(TopTransactionContext, capacity * sizeof(PendingReset))
                           : repalloc(pending, capacity * sizeof(PendingReset)));
    pending_capacity = capacity;
  }
  pending[pending_count].key = counter_key;
  pending[pending_count].subxact = GetCurrentSubTransactionId();
  ++pending_count;
}

}  // namespace rate_limiter::pg
