// Is a session id revoked?  The hot path's question, answered from the
// shared revocation cache (revocation_cache.hpp) without running SQL, except:
//  - once per installation after a server start, a TRUNCATE, a
//    reload_revocations() or an overflow: the installation's revocations
//    are loaded from token_revocations (latest snapshot, as the extension
//    owner) before the first lookup;
//  - the cache cannot be trusted, so the table is asked directly (an index
//    lookup, same snapshot): the installation overflowed the cache and does
//    not hold the token; the installation has no revocation triggers (still
//    at extension version 1.0: ALTER EXTENSION rate_limiter UPDATE); this
//    is a hot standby (commits there do not run our triggers); or the
//    current transaction truncated the table.
// The current transaction's own uncommitted revocations count
// (revocation_changes.hpp); other sessions' count once committed.
#pragma once

#include <string_view>

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// Phase 1 of a hot-path call: may run SQL and ereport, so call it before
// taking any lock.  `token` is a validated id (1 to 255 bytes).
bool session_revoked(std::string_view token);

// Whether this installation's revocations are kept in the shared cache
// (false: every lookup asks the table).
bool revocation_cache_usable();

// Registers the transaction callbacks and the relcache callback; once, from
// _PG_init.
void register_revocations();

}  // namespace rate_limiter::pg
