// The retry search (see retry.hpp).
//
// Per limit, next_chance(t) is the first instant >= t at which the limit
// could pass, given that it does not pass at t.  Notation: r(t) is the
// main counter's available(), monotone non-decreasing while nothing is
// taken (fixed window: steps at the window end; sliding window: falls
// with the estimate; buckets: refill); when_available(k) is the first
// instant r >= k (wait_for(); never when k > capacity).
//
//   request limit        r >= 1
//   burst cap (tokens)   r >= need (checks: 1)
//   token quota          r >= R_top = the least r with floor(top * r) >= 1
//                        (not exhausted) and, for allocations,
//                        floor(share * r) >= need
//   ... in burst mode    or: floor(share * r) + b >= need and
//                        min(r, floor(burst_share * r)) >= need, where the
//                        budget b is its available() until its window ends
//                        and full after: two closed forms, the earlier wins
//   emergency path       r + extra >= K (K = need, or 1), where extra is
//                        the allowance's available() (again a step at its
//                        window end) while usage >= threshold, i.e. while
//                        r <= R_thr = C - ceil(threshold * C): the first
//                        r >= K, or the first r + e >= K before r > R_thr
//   dynamic share        the token quota's formula with the share at t,
//                        capped at the end of the window (T falls to 0 and
//                        H changes there), and no earlier than the formula
//                        with the best factor the limit can ever have
//                        (T = S = 0, and H = 0 for windows, which halve it
//                        each window); never when even that cannot pass.
//
// Each formula but the dynamic one is the exact first instant >= t (the
// conditions are monotone in r and in the step counters), so jumping to the
// latest next_chance() of the limits that do not pass never skips an
// instant at which all pass.  The dynamic one is exact as long as S does
// not change: within a window the share only falls, so no instant before
// the formula's can pass.
#include "rate_limiter/core/retry.hpp"

#include <algorithm>
#include <limits>

namespace rate_limiter::core {
namespace {

using i128 = __int128;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int64_t kPpm = kShareScale;

bool is_bucket(Algorithm a) noexcept { return a == Algorithm::TokenBucket || a == Algorithm::Gcra; }

int64_t later_by(int64_t t, int64_t wait) noexcept {
  const i128 at = static_cast<i128>(t) + wait;
  return at >= kNever ? kNever : static_cast<int64_t>(at);
}

// The first instant >= t at which the main counter has k units available.
int64_t when_available(const AppliedLimit& l, int64_t k, int64_t t) noexcept {
  if (k <= 0) return t;
  const int64_t wait = wait_for(l.rule, *l.state, k, t);
  return wait < 0 ? kNever : later_by(t, wait);
}

// A fixed-window counter (burst budget, emergency allowance) holds
// `available` until its window ends at refill_at, and `full` from then on.
struct Step {
  int64_t available = 0;
  int64_t refill_at = 0;
  int64_t full = 0;
};

Step step_of(const LimitRule& rule, const CounterState& state, int64_t t) noexcept {
  Step s;
  s.available = available(rule, state, t);
  s.refill_at = reset_at(rule, state, t);
  s.full = capacity(rule);
  return s;
}

// The first instant >= t at which the main counter has what the step
// counter's value at that instant requires: k_now units while it holds
// `available`, k_full once it is full.
int64_t first_with_step(const AppliedLimit& l, const Step& s, int64_t k_now, int64_t k_full,
                        int64_t t) noexcept {
  const int64_t first = when_available(l, k_now, t);
  if (first < s.refill_at || s.available >= s.full) return first;
  const int64_t later = when_available(l, k_full, t);
  return later == kNever ? kNever : std::max(later, s.refill_at);
}

// A token quota on the normal path with a given share.
int64_t share_chance(const CallShape& c, const AppliedLimit& l, const Evaluation& e, uint32_t share,
                     int64_t t) noexcept {
  const int64_t r_top = units_for_share(c.top_share, 1);
  if (!c.allocate) return when_available(l, r_top, t);
  const int64_t plain = when_available(l, std::max(r_top, units_for_share(share, c.need)), t);
  if (!e.burst) return plain;
  const i128 raised = static_cast<i128>(share) * l.params.burst_multiplier_ppm / kPpm;
  const auto burst_share = static_cast<uint32_t>(std::min<i128>(kPpm, raised));
  const int64_t r_hi = std::max({r_top, c.need, units_for_share(burst_share, c.need)});
  const Step budget = step_of(e.burst_rule, *l.burst_state, t);
  const int64_t with_budget =
      first_with_step(l, budget, std::max(r_hi, units_for_share(share, c.need - budget.available)),
                      std::max(r_hi, units_for_share(share, c.need - budget.full)), t);
  return std::min(plain, with_budget);
}

int64_t emergency_chance(const CallShape& c, const AppliedLimit& l, const Evaluation& e,
                         int64_t t) noexcept {
  const int64_t k = l.kind == LimitKind::Requests || !c.allocate ? 1 : std::max<int64_t>(1, c.need);
  const int64_t own = when_available(l, k, t);
  if (e.emergency_rule.limit <= 0) return own;
  // usage_ppm >= threshold  <=>  available <= C - ceil(threshold * C / 1e6).
  const i128 over =
      (static_cast<i128>(l.params.emergency_threshold_ppm) * e.capacity + kPpm - 1) / kPpm;
  const i128 r_thr = static_cast<i128>(e.capacity) - over;
  if (r_thr < 0) return own;  // a threshold above 1: never past it
  const int64_t past_until = when_available(l, static_cast<int64_t>(r_thr) + 1, t);
  const Step allowance = step_of(e.emergency_rule, *l.emergency_state, t);
  const int64_t with_allowance =
      first_with_step(l, allowance, k - allowance.available, k - allowance.full, t);
  return with_allowance < past_until ? std::min(own, with_allowance) : own;
}

// The first instant >= t at which every Endpoint-scope counter is full
// again, so that the load S is 0 from then on.
int64_t load_gone(const AppliedLimit* limits, std::size_t n, int64_t t) noexcept {
  int64_t at = t;
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    if (l.state == nullptr || l.scope != ScopeKind::Endpoint) continue;
    if (usage_ppm(l.rule, *l.state, t) == 0) continue;
    at = std::max(at, reset_at(l.rule, *l.state, t));
  }
  return at;
}

int64_t dynamic_chance(const CallShape& c, const AppliedLimit* limits, std::size_t n,
                       const AppliedLimit& l, const Evaluation& e, uint32_t load,
                       int64_t t) noexcept {
  const CounterState st = advance(l.rule, *l.state, t);
  const bool window = !is_bucket(l.rule.algorithm);
  // The best factor the limit can ever have: T = 0 and S = 0, and H = 0 for
  // windows (a bucket's history never changes).
  const uint32_t best = dynamic_factor_ppm(l.params, window ? 0 : st.history_ppm, 0, 0);
  const auto best_share = static_cast<uint32_t>(static_cast<uint64_t>(c.base_share) * best / kPpm);
  // No share is larger, so no instant before this one can pass.
  const int64_t earliest = share_chance(c, l, e, best_share, t);
  if (earliest == kNever) return kNever;
  const int64_t now_share = share_chance(c, l, e, e.share, t);
  if (window) {
    const i128 end = static_cast<i128>(st.window_start) + l.rule.window_micros;
    const int64_t window_end = end >= kNever ? kNever : static_cast<int64_t>(end);
    // Within the window the share only falls (T grows).
    if (now_share < window_end) return now_share;
    // At the start of an empty window with no history (T = 0, and H stays
    // 0 while nothing is counted) the share is the largest the limit will
    // have at this load: nothing before now_share passes, and only a lower
    // load can help when nothing ever does.
    if (st.history_ppm == 0 && st.used <= 0 && window_position_ppm(l.rule, st, t) == 0) {
      if (now_share != kNever) return std::max(now_share, earliest);
      return load > 0 ? std::max({window_end, earliest, load_gone(limits, n, t)}) : kNever;
    }
    return std::max(window_end, earliest);
  }
  if (now_share != kNever) return now_share;
  return load > 0 ? std::max(t + 1, load_gone(limits, n, t)) : kNever;
}

// The first instant >= t at which limit i could pass; it does not pass at t.
int64_t next_chance(const CallShape& c, const AppliedLimit* limits, std::size_t n, std::size_t i,
                    const Evaluation& e, uint32_t load, int64_t t) noexcept {
  const AppliedLimit& l = limits[i];
  // An allocation of nothing is never granted by a token quota.
  if (c.allocate && l.kind == LimitKind::Tokens && c.wanted < 1) return kNever;
  if (e.emergency) return emergency_chance(c, l, e, t);
  if (l.kind == LimitKind::Requests) return when_available(l, 1, t);
  if (l.burst_cap) return when_available(l, c.allocate ? c.need : 1, t);
  if (c.allocate && l.params.dynamic) return dynamic_chance(c, limits, n, l, e, load, t);
  return share_chance(c, l, e, e.share, t);
}

}  // namespace

RetryPlan earliest_retry(const CallShape& call, const AppliedLimit* limits, std::size_t n,
                         const Evaluation* ev, uint32_t load, int64_t now) noexcept {
  RetryPlan plan;
  int64_t t = now;
  for (int step = 0; step < kMaxRetrySteps; ++step) {
    if (step > 0) load = system_load(limits, n, t);
    int64_t next = t;
    int latest = -1;
    for (std::size_t i = 0; i < n; ++i) {
      const AppliedLimit& l = limits[i];
      if (l.state == nullptr) continue;
      const Evaluation e =
          step == 0 ? ev[i] : evaluate(call, l, advance(l.rule, *l.state, t), load, t);
      if (passes(call, l, e)) continue;
      const int64_t when = next_chance(call, limits, n, i, e, load, t);
      if (when == kNever) {
        plan.never = true;
        plan.binding = static_cast<int>(i);
        return plan;
      }
      if (latest < 0 || when > next) {
        next = when;
        latest = static_cast<int>(i);
      }
    }
    if (latest < 0) {  // every limit passes at t
      plan.found = true;
      break;
    }
    plan.binding = latest;
    t = std::max(next, t + 1);
  }
  plan.at = std::max(t, now + 1);
  return plan;
}

int never_passing_limit(const CallShape& call, const AppliedLimit* limits, std::size_t n,
                        const Evaluation* ev, uint32_t load, int64_t now) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    if (l.state == nullptr) continue;
    if (!passes(call, l, ev[i]) && next_chance(call, limits, n, i, ev[i], load, now) == kNever)
      return static_cast<int>(i);
  }
  return -1;
}

}  // namespace rate_limiter::core
