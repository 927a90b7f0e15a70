#include "rate_limiter/core/decision.hpp"

#include <algorithm>

namespace rate_limiter::core {
namespace {

int64_t remaining_of(const AppliedLimit& l) noexcept {
  return std::max<int64_t>(0, l.rule.limit - l.state->used);
}

int64_t window_end(const AppliedLimit& l) noexcept {
  return l.state->window_start + l.state->window_micros;
}

// a is strictly more restrictive than b by remaining/limit fraction.
bool tighter_fraction(int64_t rem_a, int64_t lim_a, int64_t rem_b, int64_t lim_b) noexcept {
  const __int128 lhs = static_cast<__int128>(rem_a) * lim_b;
  const __int128 rhs = static_cast<__int128>(rem_b) * lim_a;
  if (lhs != rhs) return lhs < rhs;
  return rem_a < rem_b;
}

uint32_t max_share(const PriorityShares& shares) noexcept {
  return std::max({shares.ppm[0], shares.ppm[1], shares.ppm[2]});
}

}  // namespace

int64_t priority_cap(uint32_t share_ppm, int64_t remaining) noexcept {
  if (remaining <= 0) return 0;
  const unsigned __int128 product = static_cast<unsigned __int128>(share_ppm) *
                                    static_cast<unsigned __int128>(remaining);
  return static_cast<int64_t>(product / kShareScale);
}

Decision decide(const CallRequest& request, AppliedLimit* limits, std::size_t n,
                const PriorityShares& shares, int64_t now) noexcept {
  Decision d;
  n = std::min(n, kMaxAppliedLimits);

  bool any_enforced = false;
  bool any_tokens = false;
  bool requests_exhausted = false;
  int64_t min_token_remaining = kMaxQuantity;

  for (std::size_t i = 0; i < n; ++i) {
    AppliedLimit& l = limits[i];
    if (l.state == nullptr) continue;
    *l.state = current_window(*l.state, l.rule.window_micros, now);
    any_enforced = true;
    const int64_t rem = remaining_of(l);
    if (l.kind == LimitKind::Requests) {
      if (rem < 1) requests_exhausted = true;
    } else {
      any_tokens = true;
      min_token_remaining = std::min(min_token_remaining, rem);
    }
  }

  const int64_t wanted = std::clamp<int64_t>(request.tokens, 0, kMaxQuantity);
  int64_t grant = 0;
  if (!any_enforced) {
    d.outcome = Outcome::NoLimit;
    grant = request.kind == CallKind::Allocate ? wanted : 0;
  } else if (requests_exhausted) {
    d.outcome = Outcome::DeniedRequestLimit;
  } else if (any_tokens && priority_cap(max_share(shares), min_token_remaining) == 0) {
    // Not even the largest share of what remains is a whole token: no
    // request of any priority can be granted anything in this window.
    d.outcome = Outcome::DeniedTokenQuota;
  } else if (request.kind == CallKind::Check) {
    d.outcome = Outcome::Granted;
  } else if (!any_tokens) {
    d.outcome = Outcome::Granted;
    grant = wanted;
  } else {
    const int64_t cap = priority_cap(shares.ppm[static_cast<int>(request.priority)],
                                     min_token_remaining);
    grant = std::min(wanted, cap);
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
  if (allowed) {
    // All or nothing: every check above passed, so charge every limit now.
    for (std::size_t i = 0; i < n; ++i) {
      AppliedLimit& l = limits[i];
      if (l.state == nullptr) continue;
      l.state->used += l.kind == LimitKind::Requests ? 1 : grant;
    }
    d.granted = grant;
  }

  // Remaining after the call, and the binding limit.
  int binding = -1;
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    if (l.state == nullptr) continue;
    const int64_t rem = remaining_of(l);
    int64_t& kind_min = l.kind == LimitKind::Tokens ? d.tokens_remaining : d.requests_remaining;
    if (kind_min < 0 || rem < kind_min) kind_min = rem;

    bool better = false;
    if (!allowed) {
      bool denies;
      if (d.outcome == Outcome::DeniedRequestLimit || d.outcome == Outcome::DeniedTokenQuota) {
        // Every limit that refuses on its own: a retry succeeds only once
        // all of them have reset.
        denies = l.kind == LimitKind::Requests ? rem < 1
                                               : priority_cap(max_share(shares), rem) == 0;
      } else {
        // Priority share or all-or-nothing: the tightest token quotas.
        denies = l.kind == LimitKind::Tokens && rem == min_token_remaining;
      }
      better = denies && (binding < 0 || window_end(l) > window_end(limits[binding]));
    } else if (binding < 0) {
      better = request.kind == CallKind::Check || !any_tokens || l.kind == LimitKind::Tokens;
    } else {
      const AppliedLimit& b = limits[binding];
      if (request.kind == CallKind::Check) {
        better = tighter_fraction(rem, l.rule.limit, remaining_of(b), b.rule.limit);
      } else if (l.kind == b.kind) {
        better = rem < remaining_of(b);
      }
    }
    if (better) binding = static_cast<int>(i);
  }

  d.binding = binding;
  if (binding >= 0) {
    const AppliedLimit& b = limits[binding];
    // With both kinds refusing, the reason names the one that binds.
    if (d.outcome == Outcome::DeniedRequestLimit || d.outcome == Outcome::DeniedTokenQuota)
      d.outcome = b.kind == LimitKind::Requests ? Outcome::DeniedRequestLimit
                                                : Outcome::DeniedTokenQuota;
    d.binding_remaining = remaining_of(b);
    d.reset_at = window_end(b);
    if (!allowed) {
      d.retry_after = std::clamp<int64_t>(d.reset_at - now, 1, b.state->window_micros);
    }
  }
  return d;
}

}  // namespace rate_limiter::core
