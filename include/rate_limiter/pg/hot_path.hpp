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
  bool burst_cap = false;  // the seed's burst_limit over burst_window_seconds
  core::Algorithm algorithm = core::Algorithm::FixedWindow;
  int64 limit = 0;         // capacity() of the binding limit
  int64 window_micros = 0;
};

// One counter a decision charged: enough to give the units back
// (core::refund) after the locks are gone.
struct ChargedCounter {
  core::Hash128 key;
  core::LimitRule rule;
  int64 units = 0;
  int64 window = 0;
};

// Each applied limit can charge its counter, its emergency counter and its
// burst budget.
constexpr int kMaxChargedCounters = 3 * core::kMaxAppliedLimits;

// One enforced limit's usage around an allowed call, for the quota and
// emergency alerts (alerts.hpp).  "Exhausted" is what the core denies on:
// a request limit without a request left, a token quota of which not even
// the largest priority share is a whole token.
struct LimitUsage {
  bool present = false;  // false: the limit went unenforced (fail-open)
  core::LimitKind kind = core::LimitKind::Tokens;
  core::ScopeKind scope = core::ScopeKind::User;
  bool burst_cap = false;
  int64 capacity = 0;
  int64 used_before = 0;  // capacity - available(), before and after the charge
  int64 used_after = 0;
  bool exhausted_before = false;
  bool exhausted_after = false;
  int64 window_start = 0;  // aligned window of the limit's length: the alerts' dedup window
  int64 emergency_units = 0;
};

struct CallResult {
  CallStatus status = CallStatus::Decided;
  core::Decision decision;
  BindingLimit binding;
  bool fail_open = false;  // some limit went unenforced (table full, failure_mode = open)
  ChargedCounter charged[kMaxChargedCounters];
  int charged_count = 0;
  LimitUsage usage[core::kMaxAppliedLimits];  // allowed calls only; indexed as the limits
  int usage_count = 0;
};

// The limiter's clock, in microseconds since the Unix epoch.  Wall-clock
// time read now (never the transaction start), or the frozen testing clock
// (rate_limiter.debug_clock), plus the testing offset.
int64 limiter_now_unix();

TimestampTz unix_to_timestamptz(int64 unix_micros);
int64 timestamptz_to_unix(TimestampTz t);

void decide_call(const CallInput& in, int64 now, CallResult* out) noexcept;

// The counters that apply to (user, endpoint) for `kind`, main counters only,
// with their rules: what settle_tokens gives unused tokens back to.  Needs a
// current rule cache.  Returns how many were written to keys/rules (at most
// core::kMaxAppliedLimits).
int applicable_counters(std::string_view user, bool has_endpoint, std::string_view endpoint,
                        core::LimitKind kind, core::Hash128* keys, core::LimitRule* rules);

}  // namespace rate_limiter::pg
