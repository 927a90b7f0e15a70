// The transaction-effects log: what the current transaction has done to
// shared state that must follow its outcome.
//
// One log per backend, in TopTransactionContext, with one pair of
// transaction callbacks; each kind's entries are kept apart (a lane), so
// that a kind's lookups cost what it recorded, not the whole transaction.  Each entry has a kind
// and a typed payload owned by the subsystem of that kind, which registers what its entries do at
// each transaction event (EffectHandlers):
//
//   kind         owner                           recorded by
//   Revocation   revocations/revocation_changes  token_revocations triggers, reload_revocations()
//   Usage        usage/usage_pending             refund_on_abort calls in async mode
//   Counter      engine/transaction_effects      settle_tokens, reset, refund_on_abort, fail-open
//   charges
//   Lease        engine/leases                   settle_tokens, refund_on_abort (in-flight leases)
//
// Rules of the log (the only place they are decided):
//  - COMMIT and PREPARE apply the kinds in the order above (a revoked token
//    is visible before the rows of the same transaction are queued, and
//    those before the counters move); entries of a kind in recording order.
//  - PREPARE TRANSACTION is refused (PRE_PREPARE) while any entry's kind
//    says blocks_prepare(): its effect would have to happen at a COMMIT
//    PREPARED in another session, which these callbacks cannot follow.
//  - A subtransaction abort (ROLLBACK TO SAVEPOINT, an exception block)
//    visits every entry once: recorded in the aborted subtree
//    (subxact >= the aborted id; subtransaction ids grow, and every
//    subtransaction begun since the aborted one belongs to its subtree)
//    -> rolled_back() says whether it outlives the rollback; recorded
//    before -> outlived_rollback().  Entries that do not survive are
//    removed; the order of the others is kept.
//  - Every handler but blocks_prepare runs inside a transaction callback:
//    noexcept, no allocation, no SQL, nothing that can fail.  Whatever an
//    effect needs at commit (memory, queue room) is taken when it is
//    recorded.
//  - The log is forgotten at the end of the transaction, after the handlers.
#pragma once

#include <cstddef>
#include <type_traits>

#include "rate_limiter/pg/support/postgres.hpp"

namespace rate_limiter::pg {

enum class EffectKind : uint8 {
  Revocation = 0,
  Usage = 1,
  Counter = 2,
  Lease = 3
};  // commit order
constexpr int kEffectKinds = 4;

enum class EffectPhase : uint8 { Commit, Prepare, Abort, Rollback };

constexpr std::size_t kEffectPayloadBytes = 112;

struct Effect {
  SubTransactionId subxact;  // the subtransaction that recorded it (an owner may move it older)
  uint32 seq;                // recording order within the transaction (effect_log_mark())
  alignas(8) unsigned char payload[kEffectPayloadBytes];

  template <typename T>
  T& as() noexcept {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kEffectPayloadBytes &&
                  alignof(T) <= 8);
    return *reinterpret_cast<T*>(payload);
  }
  template <typename T>
  const T& as() const noexcept {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= kEffectPayloadBytes &&
                  alignof(T) <= 8);
    return *reinterpret_cast<const T*>(payload);
  }
};

// Any member may be nullptr (nothing to do).
struct EffectHandlers {
  // PRE_PREPARE: when this says true of any entry, PREPARE fails with
  // 0A000 and prepare_refusal as the message.  May ereport.
  bool (*blocks_prepare)(const Effect&);
  const char* prepare_refusal;
  void (*commit)(Effect&);
  void (*prepare)(Effect&);
  void (*abort)(Effect&);
  // Subtransaction abort, entry recorded in the aborted subtree: true keeps it.
  bool (*rolled_back)(Effect&);
  // Subtransaction abort, entry recorded before it (it stays).
  void (*outlived_rollback)(Effect&, SubTransactionId aborted);
  // Around the kind's entries of one event, called even when it has none
  // (per-kind state: a batch, reserved room, a clock reading).
  void (*begin)(EffectPhase);
  void (*end)(EffectPhase);
};

// Once per kind, from _PG_init (before register_transaction_log()).
void register_effect_kind(EffectKind kind, const EffectHandlers* handlers);
void register_transaction_log();  // once, from _PG_init

// Room for `n` more entries of `kind`: after it, that many record_effect()
// calls of that kind cannot fail.  May ereport (out of memory).
void reserve_effects(EffectKind kind, int n);

// A new entry of `kind`, stamped with the current subtransaction; its
// payload is zeroed for the caller to fill.  May ereport (out of memory)
// unless reserve_effects() made room.
Effect* record_effect(EffectKind kind);

// The entries of one kind in the current transaction, in recording order
// (valid until the next record_effect() of that kind or transaction event).
int effect_count(EffectKind kind) noexcept;
Effect* effect_at(EffectKind kind, int i) noexcept;

// The first entry of `kind` whose seq is >= `seq` (effect_count(kind) if
// none), and the entry of exactly `seq` or nullptr: a kind's entries stay
// in seq order, so these find an entry again after a compaction moved it.
int effect_lower_bound(EffectKind kind, uint32 seq) noexcept;
Effect* effect_by_seq(EffectKind kind, uint32 seq) noexcept;

// Removes the entries of `kind` that `drop` says true of, keeping the
// others' order.
void discard_effects(EffectKind kind, bool (*drop)(Effect&)) noexcept;

// The recording position now; entries recorded from here on have
// seq >= the mark, across any compaction.
uint32 effect_log_mark() noexcept;

}  // namespace rate_limiter::pg
