#include "rate_limiter/pg/engine/transaction_effects.hpp"

#include "rate_limiter/pg/engine/fail_open.hpp"
#include "rate_limiter/pg/engine/hot_path.hpp"
#include "rate_limiter/pg/shmem/partition_locks.hpp"
#include "rate_limiter/pg/support/postgres.hpp"
#include "rate_limiter/pg/shmem/shared_state.hpp"

namespace rate_limiter::pg {
namespace {

enum class Action : uint8 { Reset, Refund, Charge };
// End: at commit and at abort alike, and at PREPARE (a charge the
// transaction's outcome does not undo).  Survives: at commit and at
// PREPARE; dropped when the transaction, or the subtransaction that
// recorded it, rolls back (a charge that follows the transaction, as its
// usage row does).
enum class When : uint8 { Commit, Abort, End, Survives };

struct Adjustment {
  core::Hash128 key;
  core::LimitRule rule;
  int64 units;
  int64 charge_window;
  Action action;
  When when;
  SubTransactionId subxact;
  core::Admission admission;  // Charge: how the counter is created if absent
  bool ledger;                // Charge: outstanding in the fail-open ledger until made
  uint16 generation;          // Refund: the counter slot's generation at the charge
};

Adjustment* pending = nullptr;  // in TopTransactionContext
int pending_count = 0;
int pending_capacity = 0;
int commit_effects = 0;  // pending entries with When::Commit

void forget_transaction_state() {
  pending = nullptr;  // its memory goes with TopTransactionContext
  pending_count = 0;
  pending_capacity = 0;
  commit_effects = 0;
}

// Runs inside transaction callbacks, where nothing may fail: plain blocking
// LWLock waits (no timeout path that would need an ereport) and stores.
void apply(const Adjustment& a, int64 now) {
  const uint32 p = core::partition_of(a.key, shared->geometry.partitions);
  uint32 before = 0, after = 0;
  lock_partition(p, LW_EXCLUSIVE);
  core::CounterPartition part = counter_partition(p);
  switch (a.action) {
    case Action::Reset:
      part.reset(a.key);
      break;
    case Action::Refund:
      part.refund(a.key, a.rule, a.units, a.charge_window, now, a.generation);
      break;
    case Action::Charge: {
      // consume() clamps to what is available: a counter that ran out in
      // the meantime takes what it can.  A table with no room charges
      // nothing (the usage row still counts after a rebuild).
      before = part.count();
      uint32 evicted = 0;
      core::AcquireStatus status;
      if (core::CounterSlot* slot = part.acquire(a.key, a.rule, now, a.admission, &evicted, &status))
        core::consume(a.rule, &slot->state, a.units, now);
      after = part.count();
      break;
    }
  }
  unlock_partition(p);
  if (a.action == Action::Charge && a.ledger) settle_fail_open(a.key, a.units);
  if (after > before) pg_atomic_fetch_add_u64(&shared->metrics.keys_in_use, after - before);
  if (after < before) pg_atomic_fetch_sub_u64(&shared->metrics.keys_in_use, before - after);
}

// A dropped charge owes nothing to the fail-open ledger any more.
void drop(const Adjustment& a) noexcept {
  if (a.action == Action::Charge && a.ledger) settle_fail_open(a.key, a.units);
}

void apply_all(When when) {
  if (pending_count == 0) return;
  const int64 now = limiter_now_unix();
  for (int i = 0; i < pending_count; ++i) {
    const When w = pending[i].when;
    if (w == when || w == When::End || (w == When::Survives && when == When::Commit))
      apply(pending[i], now);
    else if (w == When::Survives)
      drop(pending[i]);
  }
}

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      if (commit_effects > 0)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot PREPARE a transaction that reset rate limit counters or settled "
                               "tokens")));
      break;
    case XACT_EVENT_COMMIT:
      apply_all(When::Commit);
      forget_transaction_state();
      break;
    case XACT_EVENT_ABORT:
      apply_all(When::Abort);
      forget_transaction_state();
      break;
    case XACT_EVENT_PREPARE:
      // Abort-time refunds are dropped; deferred charges are made now (the
      // transaction leaves this session).  The array lives in
      // TopTransactionContext, which is about to go.
      if (pending_count > 0) {
        const int64 now = limiter_now_unix();
        for (int i = 0; i < pending_count; ++i)
          if (pending[i].when == When::End || pending[i].when == When::Survives) apply(pending[i], now);
      }
      forget_transaction_state();
      break;
    default:
      break;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event != SUBXACT_EVENT_ABORT_SUB) return;
  // Subtransaction ids grow; every subtransaction begun since `subxact` is
  // one of its descendants (or was committed into one), so every entry
  // recorded since belongs to the aborted subtree.
  const int64 now = pending_count > 0 ? limiter_now_unix() : 0;
  int kept = 0;
  for (int i = 0; i < pending_count; ++i) {
    const Adjustment& a = pending[i];
    if (a.subxact < subxact || a.when == When::End) {
      pending[kept++] = a;  // a deferred charge survives the rollback, as the grant does
    } else if (a.when == When::Abort) {
      apply(a, now);
    } else if (a.when == When::Survives) {
      drop(a);
    } else {
      --commit_effects;
    }
  }
  pending_count = kept;
}

void record(const Adjustment& a) {
  if (pending_count == pending_capacity) {
    const int capacity = pending_capacity == 0 ? 16 : pending_capacity * 2;
    pending = static_cast<Adjustment*>(
        pending == nullptr ? MemoryContextAlloc(TopTransactionContext, capacity * sizeof(Adjustment))
                           : repalloc(pending, capacity * sizeof(Adjustment)));
    pending_capacity = capacity;
  }
  pending[pending_count] = a;
  pending[pending_count].subxact = GetCurrentSubTransactionId();
  ++pending_count;
  if (a.when == When::Commit) ++commit_effects;
}

}  // namespace

void register_transaction_callbacks() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

void schedule_counter_reset(const core::Hash128& counter_key) {
  record(Adjustment{counter_key, core::LimitRule{}, 0, 0, Action::Reset, When::Commit, 0, core::Admission{}, false, 0});
}

void schedule_refund_at_commit(const core::Hash128& counter_key, const core::LimitRule& rule,
                               int64_t units, int64_t charge_window, uint16_t generation) {
  record(Adjustment{counter_key, rule, units, charge_window, Action::Refund, When::Commit, 0, core::Admission{}, false,
                    generation});
}

void schedule_refund_on_abort(const core::Hash128& counter_key, const core::LimitRule& rule,
                              int64_t units, int64_t charge_window, uint16_t generation) {
  record(Adjustment{counter_key, rule, units, charge_window, Action::Refund, When::Abort, 0, core::Admission{}, false,
                    generation});
}

void schedule_deferred_charge(const core::Hash128& counter_key, const core::LimitRule& rule, int64_t units,
                              bool in_ledger, const core::Admission& admission, bool follows_transaction) {
  record(Adjustment{counter_key, rule, units, 0, Action::Charge, follows_transaction ? When::Survives : When::End, 0,
                    admission, in_ledger, 0});
}

int transaction_effects_mark() { return pending_count; }

void deferred_charges_follow_transaction(int mark) {
  for (int i = Max(mark, 0); i < pending_count; ++i)
    if (pending[i].action == Action::Charge && pending[i].when == When::End) pending[i].when = When::Survives;
}

}  // namespace rate_limiter::pg
