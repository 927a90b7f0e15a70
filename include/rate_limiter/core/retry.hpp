// When can a denied call be retried?  The retry is the same call (tokens,
// priority, all_or_nothing, burst mode, emergency) against the same
// counters with nothing else taken meanwhile, so the question is: the first
// instant t > now at which every limit passes (limit_evaluation.hpp).
//
// Each limit's counters only refill while nothing is taken, so most limits
// pass from some instant on, and that instant has a closed form
// (wait_for() of the units the limit must have, for the call's share and,
// in burst mode, for its burst budget before and after that refills).  Two
// strategies make passing depend on the time in other ways:
//  - emergency override: the allowance counts only while usage >= the
//    threshold, which refilling ends; a limit then passes on at most two
//    intervals, both in closed form;
//  - dynamic allocation: the share falls through the window (T), changes
//    when the window ends (H) and grows as the endpoint's limits refill (S).
//    The instant is computed with S as it is at each step of the search:
//    exact while S does not change during the wait (no endpoint-wide limit,
//    system_load_weight 0, or counters that do not refill meanwhile); when
//    S falls, the share only grows, so the retry passes at the reported
//    instant but may already pass earlier.
// The search (earliest_retry) evaluates every limit at t and moves t to the
// latest instant at which a limit that does not pass could first pass; it
// ends when every limit passes.  Every move is to a lower bound of the
// answer (with the caveat about S above), so the answer is exact: refused
// at t - 1 us, allowed at t.  A limit that can never pass makes the call
// never allowed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rate_limiter/core/limit_evaluation.hpp"

namespace rate_limiter::core {

// Steps of the search before it gives up and reports the instant reached.
// Without dynamic allocation it needs at most 2 per limit (an emergency
// limit passes on at most two intervals, any other from one instant on).
// With it, each step may only reach the next window of a quota: several
// dynamic quotas with different windows, each passing only early in its
// window, can outlast it.
constexpr int kMaxRetrySteps = 64;

struct RetryPlan {
  bool never = false;  // no wait lets the call through
  int64_t at = 0;      // the first instant the call passes (when !never)
  // The search reached an instant at which every limit passes.  Always,
  // unless dynamic allocation is involved; false: it gave up, and `at` is
  // the (lower-bound) instant reached.
  bool found = false;
  // The limit the retry waits for: the one that is the last to pass (ties:
  // the first in the caller's order), or the one that can never pass.
  int binding = -1;
};

// The retry of a call denied at `now`, from counters advanced to `now` (as
// decide() leaves them) and their evaluations at `now` (ev[i] for every
// limit with a counter, with system_load() at now as `load`).  Reads the
// counters, never writes them.
RetryPlan earliest_retry(const CallShape& call, const AppliedLimit* limits, std::size_t n,
                         const Evaluation* ev, uint32_t load, int64_t now) noexcept;

// The first limit that can never pass from `now` on, checked at `now`
// only (what a dry run needs to name the would-be outcome); -1: none.
// Same arguments as earliest_retry().
int never_passing_limit(const CallShape& call, const AppliedLimit* limits, std::size_t n,
                        const Evaluation* ev, uint32_t load, int64_t now) noexcept;

}  // namespace rate_limiter::core
