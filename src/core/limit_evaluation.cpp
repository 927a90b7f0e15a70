#include "rate_limiter/core/limit_evaluation.hpp"

#include <algorithm>
#include <limits>

namespace rate_limiter::core {
namespace {

using i128 = __int128;
constexpr int64_t kPpm = kShareScale;

}  // namespace

CallShape call_shape(const CallRequest& request, const PriorityShares& shares,
                     bool enforce_shadow) noexcept {
  CallShape c;
  c.request = &request;
  c.allocate = request.kind == CallKind::Allocate;
  c.wanted = c.allocate ? std::clamp<int64_t>(request.tokens, 0, kMaxQuantity) : 0;
  c.need = request.all_or_nothing ? std::max<int64_t>(1, c.wanted) : 1;
  c.top_share = std::max({shares.ppm[0], shares.ppm[1], shares.ppm[2]});
  const auto priority = static_cast<std::size_t>(request.priority);
  c.base_share = shares.ppm[priority < kPriorities ? priority : 1];
  c.enforce_shadow = enforce_shadow;
  return c;
}

int64_t units_for_share(uint32_t share_ppm, int64_t want) noexcept {
  constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
  if (want <= 0) return 0;
  if (share_ppm == 0) return kNever;
  const i128 r = (static_cast<i128>(want) * kPpm + share_ppm - 1) / share_ppm;
  return r > kNever ? kNever : static_cast<int64_t>(r);
}

uint32_t system_load(const AppliedLimit* limits, std::size_t n, int64_t t) noexcept {
  uint32_t load = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    if (l.state != nullptr && l.scope == ScopeKind::Endpoint)
      load = std::max(load, usage_ppm(l.rule, *l.state, t));
  }
  return load;
}

Evaluation evaluate(const CallShape& call, const AppliedLimit& l, const CounterState& main,
                    uint32_t load, int64_t t) noexcept {
  const CallRequest& request = *call.request;
  Evaluation e;
  e.capacity = capacity(l.rule);
  e.remaining = available(l.rule, main, t);
  // usage_ppm(), from what is already known.
  e.usage = static_cast<uint32_t>(static_cast<i128>(e.capacity - e.remaining) * kPpm / e.capacity);
  e.ignored = l.shadow && !call.enforce_shadow;
  const bool strategies = !l.burst_cap;  // burst caps take no strategy
  if (request.emergency && strategies && l.params.emergency && l.emergency_state != nullptr) {
    e.emergency = true;
    e.emergency_rule = emergency_rule(l.rule, l.params);
    if (e.emergency_rule.limit > 0 && e.usage >= l.params.emergency_threshold_ppm)
      e.extra = available(e.emergency_rule, *l.emergency_state, t);
  }
  if (l.kind == LimitKind::Requests) {
    e.admits = e.remaining + e.extra >= 1;
    return e;
  }
  if (e.emergency) {
    // Everything that remains plus the emergency allowance, no share.
    e.share = kShareScale;
    e.cap = e.remaining + e.extra;
    e.admits = e.cap >= 1;
  } else if (!strategies) {
    // A burst cap is a hard cap: all of its remaining, no share.
    e.share = kShareScale;
    e.cap = e.remaining;
    e.admits = e.cap >= 1;
  } else {
    e.share = call.base_share;
    if (l.params.dynamic) {
      e.factor = dynamic_factor_ppm(l.params, main.history_ppm, load,
                                    window_position_ppm(l.rule, main, t));
      e.share = static_cast<uint32_t>(static_cast<uint64_t>(call.base_share) * e.factor / kPpm);
    }
    e.cap = priority_cap(e.share, e.remaining);
    // Exhausted: not even the largest base share of what remains is a
    // whole token, for any priority.
    e.admits = priority_cap(call.top_share, e.remaining) >= 1;
  }
  e.cap_total = e.cap;
  if (call.allocate && !e.emergency && strategies && request.burst_mode && l.params.burst_mode &&
      l.burst_state != nullptr) {
    e.burst_rule = burst_budget_rule(l.params);
    if (e.burst_rule.limit > 0) {
      e.burst = true;
      const int64_t budget = available(e.burst_rule, *l.burst_state, t);
      const i128 raised = static_cast<i128>(e.share) * l.params.burst_multiplier_ppm / kPpm;
      e.burst_share = static_cast<uint32_t>(std::min<i128>(kPpm, raised));
      const int64_t cap_hi = std::min(e.remaining, priority_cap(e.burst_share, e.remaining));
      e.cap_total = e.cap + std::min(std::max<int64_t>(0, cap_hi - e.cap), budget);
    }
  }
  if (e.ignored) {
    // No burst budget is spent on a limit that does not cap the grant.
    e.burst = false;
    e.admits = true;
    e.cap_total = std::max(e.cap_total, call.wanted);
  }
  return e;
}

bool passes(const CallShape& call, const AppliedLimit& l, const Evaluation& e) noexcept {
  if (e.ignored) return true;
  if (!e.admits) return false;
  if (l.kind == LimitKind::Requests || !call.allocate) return true;
  return call.wanted >= 1 && e.cap_total >= call.need;
}

}  // namespace rate_limiter::core
