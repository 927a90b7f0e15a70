// The decision of one call: which limits allow it, how many tokens it gets,
// and what the result record reports.
//
// decide() is the only place where quota is granted.  It runs inside the
// partition locks, so it is noexcept, allocates nothing and finishes in a
// bounded number of steps (at most kMaxAppliedLimits limits).
#pragma once

#include <cstddef>
#include <cstdint>

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/core/window.hpp"

namespace rate_limiter::core {

struct LimitRule {
  int64_t limit = 0;          // 1 .. kMaxQuantity
  int64_t window_micros = 0;  // kMinWindowMicros .. kMaxWindowMicros
};

// One limit that applies to this call.
struct AppliedLimit {
  LimitKind kind = LimitKind::Tokens;
  ScopeKind scope = ScopeKind::User;  // reported back; Default means "user scope, default rule"
  LimitRule rule;
  // The counter, inside a locked shared-memory slot.  nullptr means the limit
  // is not enforced for this call (fail-open: no counter could be created).
  CounterState* state = nullptr;
};

// Three scopes times two kinds.
constexpr std::size_t kMaxAppliedLimits = 6;

enum class CallKind : uint8_t {
  Allocate,  // allocate_tokens: counts one request and grants tokens
  Check,     // check_rate_limit: counts one request, grants no tokens
};

// Fixed-point shares, kShareScale = 1.0.  Indexed by Priority.
struct PriorityShares {
  uint32_t ppm[kPriorities] = {500'000, 300'000, 200'000};
};

struct CallRequest {
  CallKind kind = CallKind::Allocate;
  int64_t tokens = 0;  // Allocate: 1 .. kMaxQuantity; ignored for Check
  Priority priority = Priority::Medium;
  bool all_or_nothing = false;  // deny instead of granting less than requested
};

enum class Outcome : uint8_t {
  Granted,             // allowed; an allocation got everything it asked for
  PartialGrant,        // allowed; capped by floor(share * remaining)
  NoLimit,             // allowed; no limit applies
  DeniedRequestLimit,  // a request limit has no request left in its window
  DeniedTokenQuota,    // a token quota is exhausted: not even the largest
                       // priority share of what remains is a whole token
  DeniedPriorityShare, // a larger share would get tokens, this priority's gets 0
  DeniedAllOrNothing,  // all_or_nothing and the grant would have been partial
  DeniedRevoked,       // the session id is revoked; set by the caller, never by decide()
};

constexpr bool outcome_allows(Outcome o) noexcept {
  return o == Outcome::Granted || o == Outcome::PartialGrant || o == Outcome::NoLimit;
}

struct Decision {
  Outcome outcome = Outcome::NoLimit;
  int64_t granted = 0;             // tokens granted; 0 when denied and for Check
  int binding = -1;                // index of the limit the result describes, -1: none
  int64_t tokens_remaining = -1;   // min over token quotas after the call; -1: none applies
  int64_t requests_remaining = -1; // min over request limits after the call; -1: none applies
  int64_t binding_remaining = -1;  // remaining of the binding limit after the call
  int64_t reset_at = 0;            // end of the binding limit's window (us since epoch); 0: none
  int64_t retry_after = 0;         // us until a retry can succeed; 0 when allowed

  bool allowed() const noexcept { return outcome_allows(outcome); }
};

// Decides the call against every limit in `limits` and, only when it is
// allowed, charges all of them (all or nothing).  Every enforced counter is
// first brought to its current window (that write happens on denial too; it
// changes no quota).
//
// Binding limit (the one "limit", reset_at and retry_after describe):
//  - denied: among the limits that deny, the one whose window ends last
//    (the earliest instant at which a retry can succeed).  When a request
//    limit and an exhausted token quota both deny, the outcome names the
//    kind of the binding one;
//  - allowed allocation: the token quota with the least tokens remaining,
//    else the request limit with the fewest requests remaining;
//  - allowed check: the limit with the smallest remaining/limit fraction,
//    ties broken by the smaller remaining, then by position.
// Earlier positions win ties; callers pass user+endpoint, user, endpoint.
Decision decide(const CallRequest& request, AppliedLimit* limits, std::size_t n,
                const PriorityShares& shares, int64_t now) noexcept;

// floor(share_ppm * remaining / kShareScale), exact.
int64_t priority_cap(uint32_t share_ppm, int64_t remaining) noexcept;

}  // namespace rate_limiter::core
