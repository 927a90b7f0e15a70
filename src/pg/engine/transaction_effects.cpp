#include "rate_limiter/pg/engine/transaction_effects.hpp"

#include "rate_limiter/pg/engine/fail_open.hpp"
#include "rate_limiter/pg/engine/hot_path.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

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
  bool ledger;                // Charge: outstanding in the fail-open ledger until made
  uint16 generation;          // Refund: the counter slot's generation at the charge
  core::Admission admission;  // Charge: how the counter is created if absent
};

int64 phase_now =
    0;  // the clock, read once per transaction event that applies an entry (0: not yet)

void drop(const Adjustment& a) noexcept;

// Runs inside transaction callbacks, where nothing may fail: plain blocking
// LWLock waits (no timeout path that would need an ereport) and stores.
void apply(const Adjustment& a) {
  if (phase_now == 0) phase_now = limiter_now_unix();
  const int64 now = phase_now;
  // A deferred charge for a calendar period (a rule on an origin of its
  // own, calendar_rules.hpp) that has ended since the call: its rule would
  // rebuild the counter of the current period, which the charge is not
  // part of.  The usage row still counts if the period is ever rebuilt.
  if (a.action == Action::Charge && a.rule.origin != core::kWindowOriginMicros &&
      static_cast<__int128>(now) >= static_cast<__int128>(a.rule.origin) + a.rule.window_micros) {
    drop(a);
    return;
  }
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
      if (core::CounterSlot* slot =
              part.acquire(a.key, a.rule, now, a.admission, &evicted, &status))
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

// The handlers of EffectKind::Counter (transaction_log.hpp).
void begin_phase(EffectPhase) { phase_now = 0; }

bool blocks_prepare(const Effect& e) { return e.as<Adjustment>().when == When::Commit; }

void at_commit(Effect& e) {
  const Adjustment& a = e.as<Adjustment>();
  if (a.when != When::Abort) apply(a);  // Commit, End and Survives
}

void at_abort(Effect& e) {
  const Adjustment& a = e.as<Adjustment>();
  if (a.when == When::Abort || a.when == When::End)
    apply(a);
  else if (a.when == When::Survives)
    drop(a);
}

// Abort-time refunds are dropped; deferred charges are made now (the
// transaction leaves this session).
void at_prepare(Effect& e) {
  const Adjustment& a = e.as<Adjustment>();
  if (a.when == When::End || a.when == When::Survives) apply(a);
}

// A ROLLBACK TO SAVEPOINT refunds the calls made since at once; a deferred
// charge survives it, as the grant does.
bool rolled_back(Effect& e) {
  const Adjustment& a = e.as<Adjustment>();
  if (a.when == When::End) return true;
  if (a.when == When::Abort) apply(a);
  if (a.when == When::Survives) drop(a);
  return false;
}

constexpr EffectHandlers kHandlers = {
    blocks_prepare, "cannot PREPARE a transaction that reset rate limit counters or settled tokens",
    at_commit,      at_prepare,
    at_abort,       rolled_back,
    nullptr,        begin_phase,
    nullptr,
};

void record(const Adjustment& a) { record_effect(EffectKind::Counter)->as<Adjustment>() = a; }

}  // namespace

void register_transaction_callbacks() { register_effect_kind(EffectKind::Counter, &kHandlers); }

void schedule_counter_reset(const core::Hash128& counter_key) {
  record(Adjustment{counter_key, core::LimitRule{}, 0, 0, Action::Reset, When::Commit, false, 0,
                    core::Admission{}});
}

void schedule_refund_at_commit(const core::Hash128& counter_key, const core::LimitRule& rule,
                               int64_t units, int64_t charge_window, uint16_t generation) {
  record(Adjustment{counter_key, rule, units, charge_window, Action::Refund, When::Commit, false,
                    generation, core::Admission{}});
}

void schedule_refund_on_abort(const core::Hash128& counter_key, const core::LimitRule& rule,
                              int64_t units, int64_t charge_window, uint16_t generation) {
  record(Adjustment{counter_key, rule, units, charge_window, Action::Refund, When::Abort, false,
                    generation, core::Admission{}});
}

void schedule_deferred_charge(const core::Hash128& counter_key, const core::LimitRule& rule,
                              int64_t units, bool in_ledger, const core::Admission& admission,
                              bool follows_transaction) {
  record(Adjustment{counter_key, rule, units, 0, Action::Charge,
                    follows_transaction ? When::Survives : When::End, in_ledger, 0, admission});
}

uint32_t transaction_effects_mark() { return effect_log_mark(); }

void deferred_charges_follow_transaction(uint32_t mark) {
  for (int i = effect_count(EffectKind::Counter) - 1; i >= 0; --i) {
    Effect* e = effect_at(EffectKind::Counter, i);
    if (e->seq < mark) break;  // entries keep their recording order
    Adjustment& a = e->as<Adjustment>();
    if (a.action == Action::Charge && a.when == When::End) a.when = When::Survives;
  }
}

}  // namespace rate_limiter::pg
