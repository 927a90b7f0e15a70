#include "rate_limiter/pg/revocations/revocation_changes.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kMaxPendingChanges = 4096;

RevocationChange* pending = nullptr;  // in TopTransactionContext, in statement order
int pending_count = 0;
int pending_capacity = 0;

void forget_changes() {
  pending = nullptr;  // its memory goes with TopTransactionContext
  pending_count = 0;
  pending_capacity = 0;
}

// Replaces every pending change by one Reload per installation, recorded
// with the oldest subtransaction that changed it: rolling back a later
// subtransaction then keeps the reload (harmless), rolling back that one
// drops it together with everything it stood for.
void collapse_to_reloads() {
  int kept = 0;
  for (int i = 0; i < pending_count; ++i) {
    const RevocationChange& c = pending[i];
    int j = 0;
    while (j < kept && pending[j].installation != c.installation) ++j;
    if (j == kept) {
      pending[kept] = c;
      pending[kept].kind = RevocationChangeKind::Reload;
      pending[kept].key = core::Hash128{};
      ++kept;
    } else if (c.subxact < pending[j].subxact) {
      pending[j].subxact = c.subxact;
    }
  }
  pending_count = kept;
}

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      if (pending_count > 0)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot PREPARE a transaction that revoked or unrevoked tokens")));
      break;
    case XACT_EVENT_COMMIT:
      // The transaction is already visible to new snapshots here, which the
      // loading protocol relies on (revocation_cache.hpp).
      if (pending_count > 0) apply_revocation_changes(pending, pending_count);
      forget_changes();
      break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PREPARE:
      forget_changes();
      break;
    default:
      break;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event != SUBXACT_EVENT_ABORT_SUB) return;
  // Every subtransaction begun since `subxact` is one of its descendants.
  int kept = 0;
  for (int i = 0; i < pending_count; ++i)
    if (pending[i].subxact < subxact) pending[kept++] = pending[i];
  pending_count = kept;
}

}  // namespace

void register_revocation_transaction_callbacks() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

void record_revocation_change(RevocationChangeKind kind, uint64 installation,
                              const core::Hash128& key) {
  // Recording after the collapse stays exact: changes apply in order, so a
  // change after a reload is applied after it (and is seen by the session
  // itself before it).
  if (pending_count == kMaxPendingChanges) collapse_to_reloads();
  if (pending_count == pending_capacity) {
    const int capacity = pending_capacity == 0 ? 16 : pending_capacity * 2;
    pending = static_cast<RevocationChange*>(
        pending == nullptr
            ? MemoryContextAlloc(TopTransactionContext, capacity * sizeof(RevocationChange))
            : repalloc(pending, capacity * sizeof(RevocationChange)));
    pending_capacity = capacity;
  }
  RevocationChange& c = pending[pending_count];
  c.kind = kind;
  c.installation = installation;
  c.key = kind == RevocationChangeKind::Reload ? core::Hash128{} : key;
  c.subxact = GetCurrentSubTransactionId();
  ++pending_count;
}

PendingAnswer pending_revocation(uint64 installation, const core::Hash128& key, bool* touched) {
  *touched = false;
  // The latest change wins.
  for (int i = pending_count - 1; i >= 0; --i) {
    const RevocationChange& c = pending[i];
    if (c.installation != installation) continue;
    *touched = true;
    if (c.kind == RevocationChangeKind::Reload) return PendingAnswer::AskTable;
    if (c.key == key)
      return c.kind == RevocationChangeKind::Insert ? PendingAnswer::Revoked : PendingAnswer::NotRevoked;
  }
  return PendingAnswer::None;
}

}  // namespace rate_limiter::pg
