#include "rate_limiter/core/decision.hpp"

#include <algorithm>
#include <limits>

namespace rate_limiter::core {
namespace {

using i128 = __int128;
constexpr int64_t kPpm = kShareScale;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// a is strictly more restrictive than b by remaining/limit fraction.
bool tighter_fraction(int64_t rem_a, int64_t lim_a, int64_t rem_b, int64_t lim_b) noexcept {
  const i128 lhs = static_cast<i128>(rem_a) * lim_b;
  const i128 rhs = static_cast<i128>(rem_b) * lim_a;
  if (lhs != rhs) return lhs < rhs;
  return rem_a < rem_b;
}

uint32_t max_share(const PriorityShares& shares) noexcept {
  return std::max({shares.ppm[0], shares.ppm[1], shares.ppm[2]});
}

// The smallest remaining r with floor(share * r / 1e6) >= want (want >= 1);
// kNever when the share is 0.
int64_t units_for_share(uint32_t share_ppm, int64_t want) noexcept {
  if (share_ppm == 0) return kNever;
  const i128 r = (static_cast<i128>(want) * kPpm + share_ppm - 1) / share_ppm;
  return r > kNever ? kNever : static_cast<int64_t>(r);
}

// What decide() works out for one enforced limit before charging anything.
struct Evaluation {
  int64_t capacity = 0;
  int64_t remaining = 0;   // available() before the call
  uint32_t usage = 0;      // usage_ppm() before the call
  bool emergency = false;  // the emergency path applies to this limit
  LimitRule emergency_rule;
  int64_t extra = 0;              // emergency units available to this call
  uint32_t share = 0;             // effective share (normal token path)
  uint32_t factor = kShareScale;  // dynamic factor; kShareScale: none
  bool burst = false;             // the burst budget applies to this limit
  LimitRule burst_rule;
  int64_t cap = 0;        // tokens: normal cap (emergency: remaining + extra)
  int64_t cap_total = 0;  // tokens: cap plus what burst mode adds
  bool admits = false;    // requests: one request fits; tokens: not exhausted
};

}  // namespace

int64_t priority_cap(uint32_t share_ppm, int64_t remaining) noexcept {
  if (remaining <= 0) return 0;
  const unsigned __int128 product =
      static_cast<unsigned __int128>(share_ppm) * static_cast<unsigned __int128>(remaining);
  return static_cast<int64_t>(product / kShareScale);
}

uint32_t dynamic_factor_ppm(const StrategyParams& params, uint32_t history_ppm, uint32_t load_ppm,
                            uint32_t position_ppm) noexcept {
  const i128 penalty = static_cast<i128>(params.history_weight_ppm) * history_ppm +
                       static_cast<i128>(params.load_weight_ppm) * load_ppm +
                       static_cast<i128>(params.time_weight_ppm) * position_ppm;
  const i128 scaled = static_cast<i128>(kPpm) * kPpm - penalty;
  if (scaled < static_cast<i128>(kMinDynamicFactorPpm) * kPpm) return kMinDynamicFactorPpm;
  return static_cast<uint32_t>(std::min<i128>(kPpm, scaled / kPpm));
}

LimitRule emergency_rule(const LimitRule& rule, const StrategyParams& params) noexcept {
  LimitRule r;
  r.algorithm = Algorithm::FixedWindow;
  r.window_micros = rule.window_micros;
  if (params.override_ppm > 0) {
    const i128 allowance = static_cast<i128>(params.override_ppm) * capacity(rule) / kPpm;
    r.limit = static_cast<int64_t>(std::clamp<i128>(allowance, 1, kMaxQuantity));
  }
  return r;
}

LimitRule burst_budget_rule(const StrategyParams& params) noexcept {
  LimitRule r;
  r.algorithm = Algorithm::FixedWindow;
  r.window_micros = params.burst_window_micros;
  r.limit = std::clamp<int64_t>(params.max_burst_tokens, 0, kMaxQuantity);
  return r;
}

namespace {

// decide() for one mode.  charge: whether an allowed call charges (false:
// a dry run that only advances counters, which changes no quota).
// enforce_shadow: whether shadow limits can deny and cap the grant.
Decision decide_mode(const CallRequest& request, AppliedLimit* limits, std::size_t n,
                     const PriorityShares& shares, int64_t now, bool charge,
                     bool enforce_shadow) noexcept {
  Decision d;
  if (limits == nullptr) n = 0;
  n = std::min(n, kMaxAppliedLimits);
  const bool allocate = request.kind == CallKind::Allocate;
  const int64_t wanted = allocate ? std::clamp<int64_t>(request.tokens, 0, kMaxQuantity) : 0;
  const uint32_t top_share = max_share(shares);
  const auto priority = static_cast<std::size_t>(request.priority);
  const uint32_t base_share = shares.ppm[priority < kPriorities ? priority : 1];

  // Pass 1: every enforced counter at `now`; the system load S.
  Evaluation ev[kMaxAppliedLimits];
  bool any_enforced = false;
  bool any_tokens = false;
  uint32_t load = 0;
  for (std::size_t i = 0; i < n; ++i) {
    AppliedLimit& l = limits[i];
    if (l.state == nullptr) continue;
    *l.state = advance(l.rule, *l.state, now);
    any_enforced = true;
    if (l.kind == LimitKind::Tokens) any_tokens = true;
    ev[i].capacity = capacity(l.rule);
    ev[i].remaining = available(l.rule, *l.state, now);
    ev[i].usage = usage_ppm(l.rule, *l.state, now);
    if (l.scope == ScopeKind::Endpoint) load = std::max(load, ev[i].usage);
  }

  // Pass 2: what each limit admits under the call's strategies.
  bool any_emergency_path = false;
  bool requests_exhausted = false;
  bool tokens_exhausted = false;
  int64_t min_cap = kNever;
  for (std::size_t i = 0; i < n; ++i) {
    AppliedLimit& l = limits[i];
    if (l.state == nullptr) continue;
    Evaluation& e = ev[i];
    const bool strategies = !l.burst_cap;  // burst caps take no strategy
    if (request.emergency && strategies && l.params.emergency && l.emergency_state != nullptr) {
      e.emergency = true;
      any_emergency_path = true;
      e.emergency_rule = emergency_rule(l.rule, l.params);
      if (e.emergency_rule.limit > 0) {
        *l.emergency_state = advance(e.emergency_rule, *l.emergency_state, now);
        if (e.usage >= l.params.emergency_threshold_ppm)
          e.extra = available(e.emergency_rule, *l.emergency_state, now);
      }
    }
    // A shadow limit in the enforcing pass: evaluated for the report, but
    // it admits the call and caps nothing.
    const bool ignored = l.shadow && !enforce_shadow;
    if (l.kind == LimitKind::Requests) {
      e.admits = e.remaining + e.extra >= 1;
      if (!e.admits && !ignored) requests_exhausted = true;
      continue;
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
      e.share = base_share;
      if (l.params.dynamic) {
        e.factor = dynamic_factor_ppm(l.params, l.state->history_ppm, load,
                                      window_position_ppm(l.rule, *l.state, now));
        e.share = static_cast<uint32_t>(static_cast<uint64_t>(base_share) * e.factor / kPpm);
      }
      e.cap = priority_cap(e.share, e.remaining);
      // Exhausted: not even the largest base share of what remains is a
      // whole token, for any priority.
      e.admits = priority_cap(top_share, e.remaining) >= 1;
    }
    e.cap_total = e.cap;
    if (allocate && !e.emergency && strategies && request.burst_mode && l.params.burst_mode &&
        l.burst_state != nullptr) {
      e.burst_rule = burst_budget_rule(l.params);
      if (e.burst_rule.limit > 0) {
        e.burst = true;
        *l.burst_state = advance(e.burst_rule, *l.burst_state, now);
        const int64_t budget = available(e.burst_rule, *l.burst_state, now);
        const i128 raised = static_cast<i128>(e.share) * l.params.burst_multiplier_ppm / kPpm;
        const auto burst_share = static_cast<uint32_t>(std::min<i128>(kPpm, raised));
        const int64_t cap_hi = std::min(e.remaining, priority_cap(burst_share, e.remaining));
        e.cap_total = e.cap + std::min(std::max<int64_t>(0, cap_hi - e.cap), budget);
      }
    }
    if (ignored) {
      // No burst budget is spent on a limit that does not cap the grant.
      e.burst = false;
      e.admits = true;
      e.cap_total = std::max(e.cap_total, wanted);
      continue;
    }
    if (!e.admits) tokens_exhausted = true;
    min_cap = std::min(min_cap, e.cap_total);
  }

  int64_t grant = 0;
  if (!any_enforced) {
    d.outcome = Outcome::NoLimit;
    grant = wanted;
  } else if (requests_exhausted) {
    d.outcome = Outcome::DeniedRequestLimit;
  } else if (tokens_exhausted) {
    d.outcome = Outcome::DeniedTokenQuota;
  } else if (!allocate) {
    d.outcome = Outcome::Granted;
  } else if (!any_tokens) {
    d.outcome = Outcome::Granted;
    grant = wanted;
  } else {
    grant = std::min(wanted, min_cap);
    if (grant == 0) {
      d.outcome = Outcome::DeniedPriorityShare;
    } else if (grant < wanted && request.all_or_nothing) {
      d.outcome = Outcome::DeniedAllOrNothing;
      grant = 0;
    } else {
      d.outcome = grant < wanted ? Outcome::PartialGrant : Outcome::Granted;
    }
  }

  const bool allowed = d.allowed();
  if (allowed && !charge) {
    d.granted = grant;
    return d;
  }
  if (allowed) {
    // All or nothing: every check above passed, so charge every limit now.
    // The main counter takes what it has, the emergency counter the rest.
    for (std::size_t i = 0; i < n; ++i) {
      AppliedLimit& l = limits[i];
      if (l.state == nullptr) continue;
      const Evaluation& e = ev[i];
      Charge& c = d.charges[i];
      const int64_t units = l.kind == LimitKind::Requests ? 1 : grant;
      const int64_t main = std::min(units, e.remaining);
      if (main > 0) {
        c.units = main;
        c.window = consume(l.rule, l.state, main, now);
      }
      // An enforcing limit never needs more than e.extra here; a shadow limit
      // (which caps no grant) takes what fits, so that the charge recorded
      // is what consume() took and a refund gives back no more.
      const int64_t over = std::min(units - main, e.extra);
      if (over > 0 && e.emergency && e.emergency_rule.limit > 0) {
        c.emergency_units = over;
        c.emergency_window = consume(e.emergency_rule, l.emergency_state, c.emergency_units, now);
        d.emergency_units = std::max(d.emergency_units, c.emergency_units);
      }
      if (e.burst && grant > e.cap) {
        c.burst_units = grant - e.cap;
        c.burst_window = consume(e.burst_rule, l.burst_state, c.burst_units, now);
        d.burst_tokens = std::max(d.burst_tokens, c.burst_units);
      }
    }
    d.granted = grant;
  }

  // Remaining after the call, and the binding limit.
  int64_t after[kMaxAppliedLimits] = {};
  int binding = -1;
  int64_t binding_wait = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    if (l.state == nullptr) continue;
    const Evaluation& e = ev[i];
    const int64_t rem = available(l.rule, *l.state, now);
    after[i] = rem;
    int64_t& kind_min = l.kind == LimitKind::Tokens ? d.tokens_remaining : d.requests_remaining;
    if (kind_min < 0 || rem < kind_min) kind_min = rem;

    bool better = false;
    if (!allowed) {
      // The units this limit lacks before a retry can pass it (0: it does
      // not deny).  Shares use the units a share needs in remaining.
      const bool no_share = e.emergency || l.burst_cap;
      int64_t lacking = 0;
      switch (d.outcome) {
        case Outcome::DeniedRequestLimit:
        case Outcome::DeniedTokenQuota:
          // Every limit that refuses on its own: a retry succeeds only once
          // all of them have refilled.
          if (!e.admits)
            lacking = l.kind == LimitKind::Requests || no_share ? 1 : units_for_share(top_share, 1);
          break;
        case Outcome::DeniedPriorityShare:
          if (l.kind == LimitKind::Tokens && e.cap_total == 0)
            lacking = no_share ? 1 : units_for_share(e.share, 1);
          break;
        case Outcome::DeniedAllOrNothing:
          if (l.kind == LimitKind::Tokens && e.cap_total < wanted) {
            if (e.emergency)
              lacking = std::max<int64_t>(1, wanted - e.extra);
            else if (l.burst_cap)
              lacking = wanted;
            else
              lacking = units_for_share(e.share, wanted);
          }
          break;
        default:
          break;
      }
      if (lacking > 0) {
        int64_t wait = wait_for(l.rule, *l.state, std::min(lacking, e.capacity), now);
        if (wait <= 0) wait = reset_at(l.rule, *l.state, now) - now;
        // A fixed window reports at most its length: only a clock stepped
        // back leaves a counter in a window that ends later than that.
        if (l.rule.algorithm == Algorithm::FixedWindow) wait = std::min(wait, l.rule.window_micros);
        wait = std::max<int64_t>(1, wait);
        if (binding < 0 || wait > binding_wait) {
          better = true;
          binding_wait = wait;
        }
      }
    } else if (binding < 0) {
      better = !allocate || !any_tokens || l.kind == LimitKind::Tokens;
    } else {
      const AppliedLimit& b = limits[binding];
      if (!allocate) {
        better = tighter_fraction(rem, e.capacity, after[binding], ev[binding].capacity);
      } else if (l.kind == b.kind) {
        better = rem < after[binding];
      }
    }
    if (better) binding = static_cast<int>(i);
  }

  d.binding = binding;
  if (binding >= 0) {
    const AppliedLimit& b = limits[binding];
    // With both kinds refusing, the reason names the one that binds.
    if (d.outcome == Outcome::DeniedRequestLimit || d.outcome == Outcome::DeniedTokenQuota)
      d.outcome =
          b.kind == LimitKind::Requests ? Outcome::DeniedRequestLimit : Outcome::DeniedTokenQuota;
    d.binding_remaining = after[binding];
    d.reset_at = reset_at(b.rule, *b.state, now);
    if (!allowed) d.retry_after = binding_wait;
  }

  if (!allocate || !any_tokens) {
    d.strategy = Strategy::None;
  } else if (allowed && any_emergency_path) {
    d.strategy = Strategy::Emergency;
  } else if (d.burst_tokens > 0) {
    d.strategy = Strategy::Burst;
  } else if (binding >= 0 && limits[binding].kind == LimitKind::Tokens &&
             ev[binding].factor < kShareScale) {
    d.strategy = Strategy::Dynamic;
  } else {
    d.strategy = Strategy::Priority;
  }
  return d;
}

}  // namespace

Decision decide(const CallRequest& request, AppliedLimit* limits, std::size_t n,
                const PriorityShares& shares, int64_t now) noexcept {
  bool any_shadow = false;
  for (std::size_t i = 0; limits != nullptr && i < std::min(n, kMaxAppliedLimits); ++i)
    if (limits[i].shadow && limits[i].state != nullptr) any_shadow = true;
  if (!any_shadow) return decide_mode(request, limits, n, shares, now, true, true);
  // Dry run with every limit enforced: the would-be outcome.  It charges
  // nothing, so the charging run below starts from the same counters
  // (advancing twice to the same `now` is idempotent).
  const Decision full = decide_mode(request, limits, n, shares, now, false, true);
  Decision d = decide_mode(request, limits, n, shares, now, true, false);
  // The enforcing run is never stricter than the full one: when it denies,
  // the full one denies too, and neither charged anything.
  if (!d.allowed()) return full;
  if (!full.allowed() || full.granted < d.granted) {
    d.shadowed = true;
    d.shadow_outcome = full.outcome;
  }
  return d;
}

}  // namespace rate_limiter::core
