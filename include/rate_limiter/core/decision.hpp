// The decision of one call: which limits allow it, how many tokens it gets,
// and what the result record reports.
//
// Every grant is decided here: decide() for a call that holds its
// counters' partition locks, decide_fail_open() for a call that could not
// get them (failure_mode = open after a lock timeout), which the PostgreSQL
// layer bounds with the fail-open ledger (pg/engine/fail_open.hpp) and
// charges when the transaction ends.  decide() runs inside the partition
// locks, so it is noexcept, allocates nothing and finishes in a
// bounded number of steps (at most kMaxAppliedLimits limits; a denial adds
// at most kMaxRetrySteps passes over them to find its retry).
#pragma once

#include <cstddef>
#include <cstdint>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/types.hpp"
#include "rate_limiter/core/uninitialized.hpp"
#include "rate_limiter/core/window.hpp"

namespace rate_limiter::core {

// Strategy parameters of one limit, resolved by the PostgreSQL layer from
// the limit's row (or the scope's request-limit row) and the GUCs.  Fractions
// are parts per million (kShareScale = 1.0).
struct StrategyParams {
  // Dynamic priority allocation (token quotas): the share is multiplied by
  //   f = 1 - (history_w * H + load_w * S + time_w * T), clamped to
  //   [kMinDynamicFactorPpm, 1]
  // H: the counter's history_ppm; S: the call's system load (see decide());
  // T: window_position_ppm().  All floors, exact.
  bool dynamic = false;
  uint32_t history_weight_ppm = 300'000;
  uint32_t load_weight_ppm = 200'000;
  uint32_t time_weight_ppm = 100'000;
  // Emergency override: once usage/capacity >= threshold (measured before
  // the call), an emergency call may take up to floor(override * capacity)
  // units per window beyond the limit, counted in the limit's emergency
  // counter.  Below the threshold an emergency call may take everything
  // that remains (no priority share), and nothing more.
  bool emergency = true;
  uint32_t emergency_threshold_ppm = 950'000;
  uint32_t override_ppm = 800'000;
  // Burst mode (token quotas): the per-request cap floor(share * remaining)
  // becomes min(remaining, floor(min(1, share * multiplier) * remaining));
  // the tokens above the normal cap are charged to a burst budget of
  // max_burst_tokens per aligned burst window.
  bool burst_mode = true;
  uint32_t burst_multiplier_ppm = 2'000'000;             // 1.0 .. 100.0
  int64_t burst_window_micros = 900 * kMicrosPerSecond;  // 15 minutes
  int64_t max_burst_tokens = 1000;
};

constexpr uint32_t kMinDynamicFactorPpm = 10'000;  // the dynamic factor never goes below 0.01

// One limit that applies to this call.
struct AppliedLimit {
  LimitKind kind = LimitKind::Tokens;
  ScopeKind scope = ScopeKind::User;  // reported back; Default means "user scope, default rule"
  // A burst cap (a limit's burst_limit over burst_window_seconds): a short
  // fixed window on top of the scope's limit of the same kind.  It takes no
  // strategy (params are ignored).
  bool burst_cap = false;
  LimitRule rule;
  StrategyParams params;
  // The counter, inside a locked shared-memory slot.  nullptr means the limit
  // is not enforced for this call (fail-open: no counter could be created).
  CounterState* state = nullptr;
  // Fixed-window counters of the limit's emergency allowance (window:
  // rule.window_micros) and burst budget (window: params.burst_window_micros),
  // in the same partition.  Only needed (non-null) when the call asks for that
  // strategy; nullptr disables the strategy for this limit.
  CounterState* emergency_state = nullptr;
  CounterState* burst_state = nullptr;
  // Shadow mode (Envoy's): the limit is evaluated and charged like any
  // other, but never denies.  See decide().
  bool shadow = false;
};

// Per scope two kinds, each with an optional burst cap: the user on the
// endpoint, the user, the endpoint, and each ancestor on the endpoint and
// on all endpoints.
constexpr std::size_t kLimitsPerScope = 2 * static_cast<std::size_t>(kLimitKinds);
constexpr std::size_t kMaxAppliedLimits =
    kLimitsPerScope * (3 + 2 * static_cast<std::size_t>(kMaxAncestors));

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
  bool burst_mode = false;      // context {"burst_mode": true}
  bool emergency = false;       // context {"emergency_override": true}, privilege checked
};

// The strategy that decided the grant (allocation_strategy in the result).
enum class Strategy : uint8_t {
  None,       // no token quota applies
  Priority,   // floor(share * remaining)
  Dynamic,    // the dynamic factor lowered the share of the binding quota
  Burst,      // burst mode granted tokens above the normal cap
  Emergency,  // an emergency call
};

// What one call charged to one limit, so that it can be given back
// (refund on abort, settle_tokens).
struct Charge {
  int64_t units = 0;             // charged to the limit's counter
  int64_t window = 0;            // consume()'s charge window
  int64_t emergency_units = 0;   // charged to the emergency counter
  int64_t emergency_window = 0;  // its window start
  int64_t burst_units = 0;       // charged to the burst budget
  int64_t burst_window = 0;      // its window start
};

enum class Outcome : uint8_t {
  Granted,                // allowed; an allocation got everything it asked for
  PartialGrant,           // allowed; capped by floor(share * remaining)
  NoLimit,                // allowed; no limit applies
  DeniedRequestLimit,     // a request limit has no request left in its window
  DeniedTokenQuota,       // a token quota is exhausted: not even the largest
                          // priority share of what remains is a whole token
  DeniedPriorityShare,    // a larger share would get tokens, this priority's gets 0
  DeniedAllOrNothing,     // all_or_nothing and the grant would have been partial
  DeniedExceedsCapacity,  // no retry can ever succeed: the request needs more than
                          // some limit can ever give it (retry_after is 0: never)
  DeniedRevoked,          // the session id is revoked; set by the caller, never by decide()
  DeniedConcurrency,      // a concurrency limit has no in-flight slot free; set by the caller
  DeniedLeaseTableFull,   // every in-flight lease of the server is held; set by the caller
};

constexpr bool outcome_allows(Outcome o) noexcept {
  return o == Outcome::Granted || o == Outcome::PartialGrant || o == Outcome::NoLimit;
}

struct Decision {
  Outcome outcome = Outcome::NoLimit;
  int64_t granted = 0;              // tokens granted; 0 when denied and for Check
  int binding = -1;                 // index of the limit the result describes, -1: none
  int64_t tokens_remaining = -1;    // min over token quotas after the call; -1: none applies
  int64_t requests_remaining = -1;  // min over request limits after the call; -1: none applies
  int64_t binding_remaining = -1;   // remaining of the binding limit after the call
  int64_t reset_at = 0;             // reset_at() of the binding limit (us since epoch); 0: none
  int64_t retry_after = 0;          // us until this call's retry succeeds (see decide());
                                    // 0 when allowed and when never (DeniedExceedsCapacity)
  bool retry_found = false;         // denied: the retry search found the instant (always
                                    // without dynamic allocation; see retry.hpp)
  Strategy strategy = Strategy::None;
  int64_t burst_tokens = 0;     // tokens granted above the normal cap by burst mode
  int64_t emergency_units = 0;  // units taken from emergency allowances (max over limits)
  // Per limit, in the caller's order: [0, n) of the decide() call, zero
  // for limits not charged; unset beyond n.
  Uninitialized<Charge, kMaxAppliedLimits> charges;
  // Shadow mode: true when the shadow limits would have denied the call or
  // granted fewer tokens, and were overridden; shadow_outcome is the outcome
  // the call would have had with every limit enforced.
  bool shadowed = false;
  Outcome shadow_outcome = Outcome::NoLimit;

  bool allowed() const noexcept { return outcome_allows(outcome); }
};

// Decides the call against every limit in `limits` and, only when it is
// allowed, charges all of them (all or nothing).  Every enforced counter
// (and the emergency / burst counters a strategy uses) is first advanced to
// `now` (that write happens on denial too; it changes no quota).
//
// Remaining means available() of the limit's algorithm; "limit" means
// capacity().  Per enforced limit, before charging:
//  - burst caps (burst_cap) take no strategy and no share: a token burst cap
//    admits up to its remaining;
//  - emergency path (request.emergency, params.emergency, emergency_state):
//    extra = available() of the emergency counter (rule emergency_rule())
//    when usage_ppm() >= emergency_threshold_ppm, else 0.  A token quota's
//    cap is remaining + extra (no share, no dynamic factor, no burst); a
//    request limit admits the request when remaining + extra >= 1;
//  - otherwise a token quota's share is the priority's base share, times
//    dynamic_factor_ppm(H = its history_ppm, S = the highest usage_ppm()
//    among the call's Endpoint-scope limits of both kinds (0 without one),
//    T = its window_position_ppm()) when params.dynamic, and its cap is
//    priority_cap(share, remaining).  In burst mode (request.burst_mode,
//    params.burst_mode, burst_state, allocations only) the cap becomes
//    cap + min(cap_hi - cap, budget available), cap_hi = min(remaining,
//    priority_cap(min(1e6, floor(share * multiplier / 1e6)), remaining)),
//    budget rule burst_budget_rule().
// Outcome: DeniedRequestLimit if a request limit does not admit;
// DeniedTokenQuota if a token quota is exhausted (normal path:
// priority_cap(largest base share, remaining) == 0; burst cap / emergency
// path: cap == 0); a check is then Granted; an allocation gets
// grant = min(wanted, min over token quotas of cap): 0 is
// DeniedPriorityShare, less than wanted is DeniedAllOrNothing with
// all_or_nothing, else PartialGrant / Granted.
// Charges (allowed only, Decision::charges): each limit takes units = 1
// (requests) or the grant (tokens): min(units, remaining) from its counter,
// the rest from its emergency counter; a quota in burst mode also charges
// max(0, grant - its cap) to its burst budget.  burst_tokens and
// emergency_units are the largest such charges.
// Strategy: None for checks and when no token quota is enforced; Emergency
// when an allowed call took the emergency path on some limit; Burst when
// burst_tokens > 0; Dynamic when the binding token quota's dynamic factor is
// below 1; else Priority.
// Retry (denied calls): the first instant t > now at which this same call
// (tokens, priority, all_or_nothing, burst mode, emergency) would be
// allowed if nothing else were taken meanwhile; retry_after = t - now >= 1
// (retry.hpp says how it is found).  For an allocation without
// all_or_nothing that is the first instant it gets at least one token.
// It is exact (refused at t - 1 us, allowed at t) for every algorithm and
// strategy, with one documented exception: with dynamic allocation, while
// the load S falls during the wait (an endpoint-wide limit refilling) the
// share grows, and the call may already pass before t (it still passes at
// t).  Two more: a fixed window whose counter lies in the future (the clock
// stepped back) reports at most its length; and with dynamic allocation the
// search may give up after kMaxRetrySteps steps and report the instant
// reached, a lower bound (retry_found false).
// When no wait can ever allow the call (it needs more than some limit can
// ever give: all_or_nothing above the capacity or above the share of a
// full limit, including the best dynamic factor and a full burst budget; a
// quota whose capacity times the largest share is below one token; a share
// of 0; an emergency call above the capacity that refilling takes out of
// the allowance) the outcome is DeniedExceedsCapacity and retry_after 0.
// Binding limit (the one "limit", reset_at and retry_after describe):
//  - denied: the limit the retry waits for: the last one to pass on the
//    way to t (ties: the earlier position), or the one that can never
//    pass.  When a request limit and an exhausted token quota both deny,
//    the outcome names the kind of the binding one;
//  - allowed allocation: the token quota with the least tokens remaining,
//    else the request limit with the fewest requests remaining;
//  - allowed check: the limit with the smallest remaining/limit fraction,
//    ties broken by the smaller remaining, then by position.
// Earlier positions win ties; callers pass user+endpoint, user, endpoint.
// Decision::reset_at is reset_at() of the binding limit after the call.
// Shadow limits (AppliedLimit::shadow): the call is decided twice, first as
// above with every limit, charging nothing (the would-be decision), then
// with the shadow limits admitting everything (they cap no grant, spend no
// burst budget and deny nothing, but are still advanced, charged
// min(units, remaining) and reported).  The second decision is the result,
// with shadowed and shadow_outcome = the first one's outcome when the first
// denies or grants fewer tokens.  When the second denies (the enforcing
// limits deny), it is the result as it is (a real denial; nothing charged;
// its retry waits for the enforcing limits only).
// Without shadow limits the result is exactly the above.
Decision decide(const CallRequest& request, AppliedLimit* limits, std::size_t n,
                const PriorityShares& shares, int64_t now) noexcept;

// The decision of a call made without its counters: failure_mode = open
// after a partition lock wait ran out.  `token_quotas`: a token quota
// applies; `reserved`: the tokens the fail-open ledger let the call reserve
// against every one of them (its priority share of their capacity less
// what other lockless grants still owe).  A check is allowed (NoLimit); an
// allocation is allowed with `reserved` tokens, with all its tokens when
// no token quota applies, and denied (DeniedTokenQuota, granted 0) when it
// could reserve nothing, or less than it asked for with all_or_nothing (the
// caller gives the reservation back).
Decision decide_fail_open(const CallRequest& request, bool token_quotas, int64_t reserved) noexcept;

// floor(share_ppm * remaining / kShareScale), exact.
int64_t priority_cap(uint32_t share_ppm, int64_t remaining) noexcept;

// The dynamic factor f in ppm, exactly
//   f = floor((10^12 - (history_w * H + load_w * S + time_w * T)) / 10^6)
// clamped to [kMinDynamicFactorPpm, kShareScale].  The share it gives is
// floor(base_share * f / 10^6).
uint32_t dynamic_factor_ppm(const StrategyParams& params, uint32_t history_ppm, uint32_t load_ppm,
                            uint32_t position_ppm) noexcept;

// The fixed-window rule of a limit's emergency counter: limit =
// floor(override * capacity(rule)) but at least 1 (0 when override is 0:
// no allowance, no counter), window = rule.window_micros.
LimitRule emergency_rule(const LimitRule& rule, const StrategyParams& params) noexcept;

// The fixed-window rule of a limit's burst budget: max_burst_tokens per
// burst_window_micros (limit 0: no budget, no counter).
LimitRule burst_budget_rule(const StrategyParams& params) noexcept;

}  // namespace rate_limiter::core
