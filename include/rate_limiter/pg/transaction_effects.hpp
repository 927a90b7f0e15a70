// Effects on shared state that follow the transaction: they happen at
// commit, and never when the transaction (or the subtransaction that asked
// for them) rolls back.
//
//  - Rule changes: a statement trigger on the rule tables marks the
//    transaction; at commit the shared rules generation is bumped, which
//    makes every backend reload its rule cache (rule_cache.hpp).
//  - Counter resets (reset_rate_limit): the counters to clear are recorded
//    with the subtransaction that asked, and cleared at commit.
//
// PREPARE TRANSACTION is refused for such transactions: their commit would
// happen later in another session, where these callbacks cannot follow.
#pragma once

#include "rate_limiter/core/types.hpp"

namespace rate_limiter::pg {

void register_transaction_callbacks();  // once, from _PG_init

void note_rule_change();  // the current transaction changed a rule table

void schedule_counter_reset(const core::Hash128& counter_key);

}  // namespace rate_limiter::pg
