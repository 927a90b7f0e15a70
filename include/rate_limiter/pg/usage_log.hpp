// Writing token_usage rows.
//
// For now every grant is written synchronously, in the caller's transaction,
// through a saved SPI plan that runs as the extension owner (application
// roles need no privilege on the table).  The row carries the decision's
// timestamp, so the window it belongs to is exact.  If the caller's
// transaction rolls back, its rows go with it while the charge to the
// shared counters stays: the counters never under-count.
#pragma once

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/arguments.hpp"

namespace rate_limiter::pg {

struct UsageRow {
  const IdArg* user;
  const IdArg* endpoint;      // may be absent
  const IdArg* session;       // may be absent
  int64 tokens;               // 0 for a check_rate_limit request
  const char* priority;       // nullptr for a check_rate_limit request
  TimestampTz at;
};

// Returns the row id (token_usage.id): allocate_tokens' allocation_id.
int64 write_usage_row(const UsageRow& row);

// Raises 25006 when the caller's transaction cannot write the usage row
// (read-only transaction or hot standby).  Called before any counter is
// charged.
void require_writable_transaction();

void register_usage_log_reset();

}  // namespace rate_limiter::pg
