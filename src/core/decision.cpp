#include "rate_limiter/core/decision.hpp"

#include <algorithm>
#include <limits>

#include "rate_limiter/core/limit_evaluation.hpp"
#include "rate_limiter/core/retry.hpp"

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
  r.origin = rule.origin;  // a calendar period's allowance follows its period
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
// a dry run that only advances counters, which changes no quota, and works
// out the outcome only).  enforce_shadow: whether shadow limits can deny
// and cap the grant.
Decision decide_mode(const CallRequest& request, AppliedLimit* limits, std::size_t n,
                     const PriorityShares& shares, int64_t now, bool charge,
                     bool enforce_shadow) noexcept {
  Decision d;
  if (limits == nullptr) n = 0;
  n = std::min(n, kMaxAppliedLimits);
  for (std::size_t i = 0; i < n; ++i) d.charges[i] = Charge{};
  const CallShape call = call_shape(request, shares, enforce_shadow);
  const bool allocate = call.allocate;
  const int64_t wanted = call.wanted;

  // Pass 1: every counter the call uses, advanced to `now` (this changes
  // no quota, and is what makes the reads below and the retry search agree
  // with later calls).
  bool any_enforced = false;
  bool any_tokens = false;
  for (std::size_t i = 0; i < n; ++i) {
    AppliedLimit& l = limits[i];
    if (l.state == nullptr) continue;
    *l.state = advance(l.rule, *l.state, now);
    any_enforced = true;
    if (l.kind == LimitKind::Tokens) any_tokens = true;
    const bool strategies = !l.burst_cap;
    const bool emergency_path =
        request.emergency && strategies && l.params.emergency && l.emergency_state != nullptr;
    if (emergency_path) {
      const LimitRule er = emergency_rule(l.rule, l.params);
      if (er.limit > 0) *l.emergency_state = advance(er, *l.emergency_state, now);
    }
    if (allocate && !emergency_path && strategies && l.kind == LimitKind::Tokens &&
        request.burst_mode && l.params.burst_mode && l.burst_state != nullptr) {
      const LimitRule br = burst_budget_rule(l.params);
      if (br.limit > 0) *l.burst_state = advance(br, *l.burst_state, now);
    }
  }

  // Pass 2: what each limit admits under the call's strategies.
  const uint32_t load = system_load(limits, n, now);
  Uninitialized<Evaluation, kMaxAppliedLimits> ev;
  bool any_emergency_path = false;
  bool requests_exhausted = false;
  bool tokens_exhausted = false;
  int64_t min_cap = kNever;
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    if (l.state == nullptr) {
      ev[i] = Evaluation{};  // unenforced: every later pass skips it
      continue;
    }
    const Evaluation& e = ev[i] = evaluate(call, l, *l.state, load, now);
    if (e.emergency) any_emergency_path = true;
    if (e.ignored) continue;
    if (!e.admits) (l.kind == LimitKind::Requests ? requests_exhausted : tokens_exhausted) = true;
    if (l.kind == LimitKind::Tokens) min_cap = std::min(min_cap, e.cap_total);
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
  if (!charge) {
    // The would-be outcome of a dry run names an impossible request too.
    if (allowed)
      d.granted = grant;
    else if (never_passing_limit(call, limits, n, ev.items, load, now) >= 0)
      d.outcome = Outcome::DeniedExceedsCapacity;
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

  // Remaining after the call.
  Uninitialized<int64_t, kMaxAppliedLimits> after;
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    after[i] = 0;
    if (l.state == nullptr) continue;
    const int64_t rem = available(l.rule, *l.state, now);
    after[i] = rem;
    int64_t& kind_min = l.kind == LimitKind::Tokens ? d.tokens_remaining : d.requests_remaining;
    if (kind_min < 0 || rem < kind_min) kind_min = rem;
  }

  // The binding limit and, when denied, the retry.
  int binding = -1;
  if (!allowed) {
    const RetryPlan retry = earliest_retry(call, limits, n, ev.items, load, now);
    binding = retry.binding;
    if (retry.never) {
      d.outcome = Outcome::DeniedExceedsCapacity;
    } else {
      d.retry_after = retry.at - now;
      d.retry_found = retry.found;
      // A fixed window reports at most its length: only a clock stepped
      // back leaves a counter in a window that ends later than that.
      const AppliedLimit& b = limits[binding];
      if (b.rule.algorithm == Algorithm::FixedWindow && b.state->window_start > now)
        d.retry_after = std::min(d.retry_after, b.rule.window_micros);
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const AppliedLimit& l = limits[i];
      if (l.state == nullptr) continue;
      bool better = false;
      if (binding < 0) {
        better = !allocate || !any_tokens || l.kind == LimitKind::Tokens;
      } else {
        const AppliedLimit& b = limits[binding];
        if (!allocate) {
          better = tighter_fraction(after[i], ev[i].capacity, after[binding], ev[binding].capacity);
        } else if (l.kind == b.kind) {
          better = after[i] < after[binding];
        }
      }
      if (better) binding = static_cast<int>(i);
    }
  }

  d.binding = binding;
  if (binding >= 0) {
    const AppliedLimit& b = limits[binding];
    // With both kinds refusing, the reason names the one that binds.
    if ((d.outcome == Outcome::DeniedRequestLimit || d.outcome == Outcome::DeniedTokenQuota) &&
        !ev[binding].admits && !ev[binding].ignored)
      d.outcome =
          b.kind == LimitKind::Requests ? Outcome::DeniedRequestLimit : Outcome::DeniedTokenQuota;
    d.binding_remaining = after[binding];
    d.reset_at = reset_at(b.rule, *b.state, now);
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
  // the full one denies too, and neither charged anything.  The enforcing
  // run's denial is the result: only enforcing limits make a retry wait.
  if (!d.allowed()) return d;
  if (!full.allowed() || full.granted < d.granted) {
    d.shadowed = true;
    d.shadow_outcome = full.outcome;
  }
  return d;
}

Decision decide_fail_open(const CallRequest& request, bool token_quotas,
                          int64_t reserved) noexcept {
  Decision d;
  if (request.kind == CallKind::Check) {
    d.outcome = Outcome::NoLimit;
    return d;
  }
  int64_t granted = token_quotas ? reserved : request.tokens;
  if (request.all_or_nothing && granted < request.tokens) granted = 0;
  d.outcome = granted > 0 ? Outcome::NoLimit : Outcome::DeniedTokenQuota;
  d.granted = granted > 0 ? granted : 0;
  return d;
}

}  // namespace rate_limiter::core
