// Test helpers for decide(): a set of limits with their counters, and calls.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "rate_limiter/core/decision.hpp"

namespace rate_limiter::core::test {

constexpr int64_t kHour = 3600 * kMicrosPerSecond;
constexpr int64_t kNow = 1'795'787'130'250'000;  // 2026-11-27 13:45:30.25 UTC

struct Fixture {
  std::vector<CounterState> states;
  std::vector<AppliedLimit> limits;

  AppliedLimit& add(LimitKind kind, int64_t limit, int64_t window = kHour, int64_t used = 0,
                    ScopeKind scope = ScopeKind::User) {
    states.reserve(kMaxAppliedLimits);
    // A fixed-window counter built for this rule, `used` units into its window.
    CounterState s = advance(LimitRule{limit, window}, CounterState{}, kNow);
    s.used = used;
    states.push_back(s);
    AppliedLimit l;
    l.kind = kind;
    l.scope = scope;
    l.rule = LimitRule{limit, window};
    limits.push_back(l);
    relink();
    return limits.back();
  }
  // A limit of any algorithm, its counter fresh at kNow.
  AppliedLimit& add_rule(LimitKind kind, const LimitRule& rule, ScopeKind scope = ScopeKind::User) {
    states.reserve(kMaxAppliedLimits);
    states.push_back(advance(rule, CounterState{}, kNow));
    AppliedLimit l;
    l.kind = kind;
    l.scope = scope;
    l.rule = rule;
    limits.push_back(l);
    relink();
    return limits.back();
  }
  // The limit's emergency counter / burst budget (fresh), as the PostgreSQL
  // layer passes them when the call asks for the strategy.
  AppliedLimit& with_emergency(std::size_t i) {
    limits[i].emergency_state = &emergency[i];
    return limits[i];
  }
  AppliedLimit& with_burst(std::size_t i) {
    limits[i].burst_state = &burst[i];
    return limits[i];
  }
  void relink() {
    for (std::size_t i = 0; i < limits.size(); ++i) limits[i].state = &states[i];
  }
  CounterState emergency[kMaxAppliedLimits];
  CounterState burst[kMaxAppliedLimits];
  Decision run(const CallRequest& r, int64_t now = kNow, PriorityShares shares = {}) {
    return decide(r, limits.data(), limits.size(), shares, now);
  }
  // decide() at `now` on copies: every counter is as it was afterwards.
  Decision probe(const CallRequest& r, int64_t now, PriorityShares shares = {}) {
    const std::vector<CounterState> saved = states;
    CounterState saved_emergency[kMaxAppliedLimits], saved_burst[kMaxAppliedLimits];
    for (std::size_t i = 0; i < kMaxAppliedLimits; ++i) {
      saved_emergency[i] = emergency[i];
      saved_burst[i] = burst[i];
    }
    const Decision d = run(r, now, shares);
    for (std::size_t i = 0; i < states.size(); ++i) states[i] = saved[i];
    for (std::size_t i = 0; i < kMaxAppliedLimits; ++i) {
      emergency[i] = saved_emergency[i];
      burst[i] = saved_burst[i];
    }
    return d;
  }
};

inline CallRequest alloc(int64_t tokens, Priority p, bool all_or_nothing = false) {
  CallRequest r;
  r.kind = CallKind::Allocate;
  r.tokens = tokens;
  r.priority = p;
  r.all_or_nothing = all_or_nothing;
  return r;
}

inline CallRequest check() {
  CallRequest r;
  r.kind = CallKind::Check;
  return r;
}

}  // namespace rate_limiter::core::test
