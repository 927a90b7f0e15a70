#include "rate_limiter/pg/revocations/revocation_changes.hpp"

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kMaxPendingChanges = 4096;

// The payload of an EffectKind::Revocation entry (its subtransaction is the
// entry's).
struct Change {
  core::Hash128 key;  // unused for Reload
  uint64 installation;
  RevocationChangeKind kind;
};

Change& change_of(Effect& e) { return e.as<Change>(); }

constexpr EffectKind kKind = EffectKind::Revocation;

// Marks the entries collapse_to_reloads() folded into an earlier one.
bool folded(Effect& e) {
  return change_of(e).kind == RevocationChangeKind::Reload && change_of(e).installation == 0;
}

// Replaces every pending change by one Reload per installation, recorded
// with the oldest subtransaction that changed it: rolling back a later
// subtransaction then keeps the reload (harmless), rolling back that one
// drops it together with everything it stood for.  (Installation ids are
// never 0: a folded entry is marked with 0 and discarded.)
void collapse_to_reloads() {
  const int n = effect_count(kKind);
  for (int i = 0; i < n; ++i) {
    Effect* e = effect_at(kKind, i);
    Change& c = change_of(*e);
    Effect* first = nullptr;
    for (int j = 0; j < i && first == nullptr; ++j) {
      Effect* f = effect_at(kKind, j);
      if (change_of(*f).installation == c.installation) first = f;
    }
    if (first == nullptr) {
      c.kind = RevocationChangeKind::Reload;
      c.key = core::Hash128{};
    } else {
      if (e->subxact < first->subxact) first->subxact = e->subxact;
      c.kind = RevocationChangeKind::Reload;
      c.installation = 0;
    }
  }
  discard_effects(kKind, folded);
}

// Where commit gathers the changes, in order, to apply them at once under
// one exclusive lock (a Delete and Insert of one token must never be seen
// half-applied by other sessions); grown with the changes, since the
// commit callback must not allocate.  In TopTransactionContext.
RevocationChange* batch = nullptr;
int batch_capacity = 0;
int batch_count = 0;

// The handlers of EffectKind::Revocation (transaction_log.hpp): applied at
// commit, when the transaction is already visible to new snapshots, which
// the loading protocol relies on (revocation_cache.hpp); forgotten at
// abort and when their subtransaction rolls back; PREPARE refused.
bool blocks_prepare(const Effect&) { return true; }

void begin_phase(EffectPhase) { batch_count = 0; }

void gather(Effect& e) {
  const Change& c = change_of(e);
  batch[batch_count++] = RevocationChange{c.key, c.installation, c.kind};
}

void end_phase(EffectPhase phase) {
  if (phase == EffectPhase::Rollback) return;
  if (phase == EffectPhase::Commit && batch_count > 0) apply_revocation_changes(batch, batch_count);
  batch = nullptr;  // its memory goes with TopTransactionContext
  batch_capacity = batch_count = 0;
}

bool rolled_back(Effect&) { return false; }

constexpr EffectHandlers kHandlers = {
    blocks_prepare, "cannot PREPARE a transaction that revoked or unrevoked tokens",
    gather,         nullptr,
    nullptr,        rolled_back,
    nullptr,        begin_phase,
    end_phase,
};

}  // namespace

void register_revocation_transaction_callbacks() {
  register_effect_kind(EffectKind::Revocation, &kHandlers);
}

void record_revocation_change(RevocationChangeKind kind, uint64 installation,
                              const core::Hash128& key) {
  // Recording after the collapse stays exact: changes apply in order, so a
  // change after a reload is applied after it (and is seen by the session
  // itself before it).
  if (effect_count(kKind) >= kMaxPendingChanges) collapse_to_reloads();
  // Room to gather every change at commit (at most one per entry).
  const int needed = effect_count(kKind) + 1;
  if (needed > batch_capacity) {
    const int fresh = Max(needed, batch_capacity == 0 ? 16 : batch_capacity * 2);
    batch = static_cast<RevocationChange*>(
        batch == nullptr
            ? MemoryContextAlloc(TopTransactionContext, fresh * sizeof(RevocationChange))
            : repalloc(batch, fresh * sizeof(RevocationChange)));
    batch_capacity = fresh;
  }
  Change& c = change_of(*record_effect(kKind));
  c.kind = kind;
  c.installation = installation;
  c.key = kind == RevocationChangeKind::Reload ? core::Hash128{} : key;
}

PendingAnswer pending_revocation(uint64 installation, const core::Hash128& key, bool* touched) {
  *touched = false;
  if (effect_count(kKind) == 0) return PendingAnswer::None;
  // The latest change wins.
  for (int i = effect_count(kKind) - 1; i >= 0; --i) {
    const Change& c = change_of(*effect_at(kKind, i));
    if (c.installation != installation) continue;
    *touched = true;
    if (c.kind == RevocationChangeKind::Reload) return PendingAnswer::AskTable;
    if (c.key == key)
      return c.kind == RevocationChangeKind::Insert ? PendingAnswer::Revoked
                                                    : PendingAnswer::NotRevoked;
  }
  return PendingAnswer::None;
}

}  // namespace rate_limiter::pg
