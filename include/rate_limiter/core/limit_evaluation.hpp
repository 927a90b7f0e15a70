// What one limit admits for one call at one instant, read from its counters
// without changing them.  decide() evaluates every limit at `now`; the retry
// search (retry.hpp) evaluates the same limits at later instants, with the
// same code, so that "allowed at now + retry_after" means exactly what
// decide() will find then.
//
// Internal to the core: the PostgreSQL layer calls decide() only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rate_limiter/core/decision.hpp"

namespace rate_limiter::core {

// The parts of a call that do not depend on the time.
struct CallShape {
  const CallRequest* request = nullptr;
  bool allocate = false;
  int64_t wanted = 0;  // tokens asked (allocations), 0 .. kMaxQuantity
  // The smallest grant that allows an allocation: everything with
  // all_or_nothing, else one token.
  int64_t need = 1;
  uint32_t top_share = 0;   // the largest base share: what "exhausted" is measured with
  uint32_t base_share = 0;  // the call's priority's share
  // false: shadow limits admit everything and cap nothing (decide()'s
  // enforcing pass); true: every limit counts.
  bool enforce_shadow = true;
};

CallShape call_shape(const CallRequest& request, const PriorityShares& shares,
                     bool enforce_shadow) noexcept;

// One limit at one instant t (see decide() in decision.hpp for the rules).
struct Evaluation {
  int64_t capacity = 0;
  int64_t remaining = 0;   // available() at t
  uint32_t usage = 0;      // usage_ppm() at t
  bool ignored = false;    // a shadow limit in the enforcing pass: admits everything
  bool emergency = false;  // the emergency path applies to this limit
  LimitRule emergency_rule;
  int64_t extra = 0;              // emergency units available to this call
  uint32_t share = 0;             // effective share (normal token path)
  uint32_t factor = kShareScale;  // dynamic factor; kShareScale: none
  bool burst = false;             // the burst budget applies to this limit
  LimitRule burst_rule;
  uint32_t burst_share = 0;  // min(1, share * multiplier)
  int64_t cap = 0;           // tokens: normal cap (emergency: remaining + extra)
  int64_t cap_total = 0;     // tokens: cap plus what burst mode adds
  bool admits = false;       // requests: one request fits; tokens: not exhausted
};

// S of the dynamic factor at t: the highest usage_ppm() among the
// Endpoint-scope limits with a counter (both kinds, shadow ones included).
uint32_t system_load(const AppliedLimit* limits, std::size_t n, int64_t t) noexcept;

// The limit at t, from its counters as they are: `main` is the limit's
// counter advanced to t (*l.state when decide() has just advanced it, else
// advance(l.rule, *l.state, t): nothing else is taken meanwhile); the
// strategy counters are read at t.
Evaluation evaluate(const CallShape& call, const AppliedLimit& l, const CounterState& main,
                    uint32_t load, int64_t t) noexcept;

// Whether the limit lets the call through: a request limit admits it; a
// token quota is not exhausted and (allocations) caps the grant at or above
// call.need.  The call is allowed exactly when every limit with a counter
// passes (and the allocation asked for at least one token).
bool passes(const CallShape& call, const AppliedLimit& l, const Evaluation& e) noexcept;

// The smallest remaining r with floor(share * r / 1e6) >= want: 0 when
// want <= 0, INT64_MAX when the share is 0.
int64_t units_for_share(uint32_t share_ppm, int64_t want) noexcept;

}  // namespace rate_limiter::core
