// Counter adjustments that follow the transaction: the Counter entries of
// the transaction-effects log (support/transaction_log.hpp, which decides
// when entries are applied, rolled back and refused at PREPARE).
//
// (Rule changes follow the transaction too, with their own index:
// rule_changes.hpp.)
//
//  - Counter adjustments recorded with the subtransaction that asked for
//    them, applied to the shared counters
//      at commit:  resets (reset_rate_limit) and refunds (settle_tokens);
//      at abort:   refunds of what the transaction charged, when it asked
//                  for refund_on_abort.  A ROLLBACK TO SAVEPOINT applies the
//                  refunds of the calls made since the savepoint at once.
//    Adjustments of the other kind are dropped.  Applying them takes plain
//    blocking partition locks inside the transaction callbacks, where nothing
//    may fail: only stores to the counter, no allocation, no SQL.
//
// PREPARE TRANSACTION is refused when commit-time effects are pending:
// their commit would happen later in another session, where these callbacks
// cannot follow.  Refund-on-abort charges are dropped at PREPARE (a later
// ROLLBACK PREPARED does not refund them).
#pragma once

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/core/types.hpp"

namespace rate_limiter::pg {

void register_transaction_callbacks();  // once, from _PG_init: the Counter handlers

// At commit: the counter restarts from nothing (full quota).
void schedule_counter_reset(const core::Hash128& counter_key);

// At commit (settle_tokens) or at abort (refund_on_abort): core::refund()
// of `units` charged in `charge_window` to the counter under `rule`, when
// the counter's slot is still at `generation` (the one it had when it was
// charged: a reset, or a rebuild after a crash, since then means the
// counter no longer holds the charge; core::CounterSlot).
void schedule_refund_at_commit(const core::Hash128& counter_key, const core::LimitRule& rule,
                               int64_t units, int64_t charge_window, uint16_t generation);
void schedule_refund_on_abort(const core::Hash128& counter_key, const core::LimitRule& rule,
                              int64_t units, int64_t charge_window, uint16_t generation);

// When the transaction ends, commit or abort alike (or is prepared): the
// counter is charged `units` (clamped to what it has then), created under
// `admission` if absent.  A grant made without the partition lock
// (failure_mode = open after a lock timeout) is charged this way once the
// lock is free; a rollback does not undo it, as it does not undo the grant.
// follows_transaction: the grant's usage row follows the transaction
// (refund_on_abort), so the charge does too: made at commit or PREPARE,
// dropped at abort and at a rollback of its subtransaction.
// in_ledger: the units are outstanding in the fail-open ledger
// (fail_open.hpp) until the charge is made or dropped.
void schedule_deferred_charge(const core::Hash128& counter_key, const core::LimitRule& rule,
                              int64_t units, bool in_ledger, const core::Admission& admission,
                              bool follows_transaction);

// A mark of the effects recorded so far (effect_log_mark()).
uint32_t transaction_effects_mark();
// The deferred charges recorded since `mark` follow the transaction from
// now on (as with follows_transaction above): their call's usage row is
// about to be written in the transaction.
void deferred_charges_follow_transaction(uint32_t mark);

}  // namespace rate_limiter::pg
