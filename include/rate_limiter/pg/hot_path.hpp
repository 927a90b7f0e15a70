// One decision: rules -> counter keys -> partition locks -> core -> unlock.
//
// decide_call() is the only code that runs with partition locks held.  It is
// noexcept and calls nothing that can ereport, allocate, run SQL or call user
// code; the caller has already validated the arguments and made the rule
// cache current, and raises any error only after decide_call() returned.
#pragma once

#include <string_view>

#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/pg/postgres.hpp"

namespace rate_limiter::pg {

struct CallInput {
  core::CallRequest request;
  std::string_view user;
  bool has_endpoint = false;
  std::string_view endpoint;
};

enum class CallStatus {
  Decided,      // decision is valid
  LockTimeout,  // a partition lock wait ran out; nothing was charged
  TableFull,    // failure_mode = closed and a counter could not be created; nothing charged
};

// What the result record reports about the binding limit.
struct BindingLimit {
  bool present = false;
  core::LimitKind kind = core::LimitKind::Tokens;
  core::ScopeKind scope = core::ScopeKind::User;
  int64 limit = 0;
  int64 window_micros = 0;
};

struct CallResult {
  CallStatus status = CallStatus::Decided;
  core::Decision decision;
  BindingLimit binding;
  bool fail_open = false;  // some limit went unenforced (table full, failure_mode = open)
};

// The limiter's clock, in microseconds since the Unix epoch.  Wall-clock
// time read now (never the transaction start), plus the testing offset.
int64 limiter_now_unix();

TimestampTz unix_to_timestamptz(int64 unix_micros);

void decide_call(const CallInput& input, int64 now_unix, CallResult* result) noexcept;

}  // namespace rate_limiter::pg
