// Changes to token_revocations made by the current transaction, applied to
// the shared revocation cache when it commits and forgotten when it (or the
// subtransaction that made them) rolls back: the Revocation entries of the
// transaction-effects log (support/transaction_log.hpp).
//
// The triggers on token_revocations record each change here (row triggers:
// the token revoked or unrevoked; the TRUNCATE trigger and
// reload_revocations(): reload).  A transaction that records more than
// kMaxPendingChanges changes keeps a single "reload" per installation
// instead, so memory stays bounded.  PREPARE TRANSACTION is refused while
// changes are pending: its commit would happen in another session.
//
// Until it commits, the session itself sees its own changes
// (pending_revocation()), as it sees its own uncommitted limit changes.
#pragma once

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/revocations/revocation_cache.hpp"

namespace rate_limiter::pg {

void register_revocation_transaction_callbacks();  // once, from _PG_init: the Revocation handlers

void record_revocation_change(RevocationChangeKind kind, uint64 installation,
                              const core::Hash128& key);

enum class PendingAnswer {
  None,        // this transaction did not change the token
  Revoked,     // it revoked the token
  NotRevoked,  // it unrevoked the token
  AskTable,    // it truncated or reloaded: only the table knows
};

// What this transaction's own changes say about one token.  *touched is
// set when the transaction changed any revocation of the installation: its
// snapshots then see uncommitted rows, which must not be loaded into the
// shared cache.
PendingAnswer pending_revocation(uint64 installation, const core::Hash128& key, bool* touched);

}  // namespace rate_limiter::pg
