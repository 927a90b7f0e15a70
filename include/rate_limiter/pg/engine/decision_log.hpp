// The decision log (rate_limiter.log_decisions): one LOG line per decision
// of allocate_tokens, check_rate_limit and enforce_rate_limit (and so of
// rate_limit_trigger, which calls them), in the style of log_lock_waits:
//
//   rate_limiter decision: function=check_rate_limit user="u1" endpoint=none
//     outcome=denied reason=request_limit_exceeded scope=user kind=requests
//     limit=5 remaining=0 strategy=none requested=none granted=0
//     retry_after=12.500s
//
// (one line; wrapped here).  Called in phase 3 only (sql_api.cpp): no
// partition lock is held and no C++ object with a destructor is alive, so
// ereport(LOG) is safe.  Callers test log_decisions_enabled() first, so
// that with "off" the hot path costs one predictable branch on a global.
#pragma once

#include "rate_limiter/pg/engine/hot_path.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

inline bool log_decisions_enabled() { return unlikely(settings.log_decisions != kLogDecisionsOff); }

// Logs the call's decision when the mode selects it and the sample draws
// it.  requested: the tokens asked for, -1 for a check.  A call denied for
// a revoked session has no binding limit (scope=none ...).
void log_decision(const char* function, const IdArg& user, const IdArg& endpoint,
                  const CallResult& result, core::CallKind kind, int64 requested);

}  // namespace rate_limiter::pg
