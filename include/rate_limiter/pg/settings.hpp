// GUC settings (rate_limiter.*).  Defined in _PG_init; read anywhere.
#pragma once

#include <cstdint>

#include "rate_limiter/core/decision.hpp"

namespace rate_limiter::pg {

enum FailureMode { kFailClosed = 0, kFailOpen = 1 };

struct Settings {
  int max_keys;             // rate_limiter.max_keys (postmaster)
  int max_revocations;      // rate_limiter.max_revocations (postmaster)
  int failure_mode;         // rate_limiter.failure_mode: FailureMode
  int lock_timeout_ms;      // rate_limiter.lock_timeout; 0 waits without bound
  double share_high;        // rate_limiter.priority_share_high
  double share_medium;      // rate_limiter.priority_share_medium
  double share_low;         // rate_limiter.priority_share_low
  int debug_hold_lock_ms;   // rate_limiter.debug_hold_lock_ms (developer)
  int debug_time_offset_s;  // rate_limiter.debug_time_offset (developer)
  int debug_revocation_load_delay_ms;  // rate_limiter.debug_revocation_load_delay_ms (developer)
};

extern Settings settings;

void define_settings();

core::PriorityShares current_priority_shares();

}  // namespace rate_limiter::pg
