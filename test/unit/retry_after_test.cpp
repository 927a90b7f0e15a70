// retry_after is the exact wait for the call that was denied: the same
// request (tokens, priority, all_or_nothing, burst mode, emergency) is
// refused at now + retry_after - 1 us and allowed at now + retry_after, if
// nothing else is taken meanwhile; a call that no wait can ever allow is
// DeniedExceedsCapacity with retry_after 0 (NULL in SQL).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "decision_fixture.hpp"
#include "rate_limiter/core/decision.hpp"

using namespace rate_limiter::core;
using namespace rate_limiter::core::test;

namespace {

constexpr int64_t kSecond = kMicrosPerSecond;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHourStart = 1'795'784'400'000'000;  // 13:00, the hour window of kNow
constexpr int64_t kMinuteEnd = 1'795'787'160'000'000;  // 13:46, end of kNow's minute

// The retry of `r` is refused a microsecond before retry_after and allowed
// at it.
::testing::AssertionResult exact_retry(Fixture& f, const CallRequest& r, const Decision& d,
                                       int64_t now, PriorityShares shares = {}) {
  if (d.allowed()) return ::testing::AssertionFailure() << "allowed";
  if (d.retry_after < 1) return ::testing::AssertionFailure() << "retry_after " << d.retry_after;
  const Decision early = f.probe(r, now + d.retry_after - 1, shares);
  if (early.allowed())
    return ::testing::AssertionFailure() << "allowed 1 us before retry_after " << d.retry_after;
  const Decision on_time = f.probe(r, now + d.retry_after, shares);
  if (!on_time.allowed())
    return ::testing::AssertionFailure()
           << "refused at retry_after " << d.retry_after << " (outcome "
           << static_cast<int>(on_time.outcome) << ", retry_after " << on_time.retry_after << ")";
  return ::testing::AssertionSuccess();
}

CallRequest all_or_nothing(int64_t tokens, Priority p) { return alloc(tokens, p, true); }

}  // namespace

// The example of the issue: a bucket of 10 refilling 1/s with 1 token left;
// all or nothing 4 at high priority needs 8 available (the share 0.5).
TEST(RetryAfter, AllOrNothingOnAnExhaustedBucketWaitsForTheWholeRequest) {
  const LimitRule bucket{10, 10 * kSecond, Algorithm::TokenBucket};
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 9, kNow);
  const CallRequest r = all_or_nothing(4, Priority::High);
  const Decision d = f.run(r);
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.retry_after, 7 * kSecond);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
  EXPECT_EQ(f.probe(r, kNow + 7 * kSecond).granted, 4);
  // Retried early (after the 1 s that was reported before), it says 6 s more.
  const Decision again = f.probe(r, kNow + kSecond);
  EXPECT_EQ(again.outcome, Outcome::DeniedAllOrNothing);
  EXPECT_EQ(again.retry_after, 6 * kSecond);
}

// Without all_or_nothing the retry waits for a grant of at least one token.
TEST(RetryAfter, PartialRequestWaitsForOneToken) {
  const LimitRule bucket{10, 10 * kSecond, Algorithm::TokenBucket};
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 9, kNow);
  const CallRequest r = alloc(4, Priority::High);
  const Decision d = f.run(r);
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.retry_after, kSecond);  // 2 available: high gets 1
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
  const Decision later = f.probe(r, kNow + kSecond);
  EXPECT_EQ(later.outcome, Outcome::PartialGrant);
  EXPECT_EQ(later.granted, 1);
}

TEST(RetryAfter, SlidingWindowWaitsForTheWholeRequest) {
  const LimitRule sliding{100, kMinute, Algorithm::SlidingWindow};
  Fixture f;
  f.add_rule(LimitKind::Tokens, sliding);
  consume(sliding, &f.states[0], 100, kNow);
  // 30 at high needs 60 remaining: ceil(100 * (60 - e) / 60) <= 40 from
  // e = 36 s into the next minute.
  const CallRequest r = all_or_nothing(30, Priority::High);
  const Decision d = f.run(r);
  EXPECT_EQ(d.retry_after, kMinuteEnd + 36 * kSecond - kNow);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
}

TEST(RetryAfter, GcraWaitsForTheWholeRequest) {
  const LimitRule gcra{10, 10 * kSecond, Algorithm::Gcra, 9};  // capacity 10, T = 1 s
  Fixture f;
  f.add_rule(LimitKind::Tokens, gcra);
  consume(gcra, &f.states[0], 10, kNow);
  // 3 at medium (0.3) needs all 10.
  const CallRequest r = all_or_nothing(3, Priority::Medium);
  const Decision d = f.run(r);
  EXPECT_EQ(d.retry_after, 10 * kSecond);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
}

TEST(RetryAfter, TheLongestWaitOfSeveralLimitsBinds) {
  const LimitRule bucket{10, 10 * kSecond, Algorithm::TokenBucket};
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 9, kNow);                         // 4 at high: 7 s
  f.add(LimitKind::Tokens, 100, kHour, 95, ScopeKind::Endpoint);  // 5 left: the next hour
  f.add(LimitKind::Requests, 5, kMinute, 5);                      // 29.75 s
  const CallRequest r = all_or_nothing(4, Priority::High);
  const Decision d = f.run(r);
  EXPECT_EQ(d.retry_after, kHourStart + kHour - kNow);
  EXPECT_EQ(d.binding, 1);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
  // Without the hourly quota the request limit binds.
  Fixture g;
  g.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &g.states[0], 9, kNow);
  g.add(LimitKind::Requests, 5, kMinute, 5);
  const Decision e = g.run(r);
  EXPECT_EQ(e.outcome, Outcome::DeniedRequestLimit);
  EXPECT_EQ(e.binding, 1);
  EXPECT_EQ(e.retry_after, kMinuteEnd - kNow);
  EXPECT_TRUE(exact_retry(g, r, e, kNow));
}

// Burst mode: the grant may also come from the burst budget once it
// refills, before the normal share alone covers the request.
TEST(RetryAfter, BurstModeCountsTheBudgetWhenItRefills) {
  const LimitRule bucket{100, 100 * kSecond, Algorithm::TokenBucket};  // T = 1 s
  Fixture f;
  AppliedLimit& l = f.add_rule(LimitKind::Tokens, bucket);
  l.params.burst_window_micros = kMinute;
  l.params.max_burst_tokens = 5;
  f.with_burst(0);
  consume(bucket, &f.states[0], 80, kNow);  // 20 left
  const LimitRule budget = burst_budget_rule(f.limits[0].params);
  f.burst[0] = advance(budget, CounterState{}, kNow);
  consume(budget, &f.burst[0], 5, kNow);  // the budget is spent until kMinuteEnd
  CallRequest r = all_or_nothing(15, Priority::Medium);
  r.burst_mode = true;
  // The share alone (0.3) needs 50 (30 s); with the budget back at
  // kMinuteEnd (29.75 s) 34 suffice: floor(0.3 * 34) + 5 = 15.
  const Decision d = f.run(r);
  EXPECT_EQ(d.outcome, Outcome::DeniedAllOrNothing);
  EXPECT_EQ(d.retry_after, kMinuteEnd - kNow);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
}

// Emergency: the allowance counts only while the limit is past its
// threshold; once the bucket refills below it the request must fit in
// what remains.
TEST(RetryAfter, EmergencyAllowanceOnlyPastTheThreshold) {
  const LimitRule bucket{100, 100 * kSecond, Algorithm::TokenBucket};  // T = 1 s
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  f.with_emergency(0);
  consume(bucket, &f.states[0], 97, kNow);                                 // 3 left, usage 0.97
  const LimitRule allowance = emergency_rule(bucket, f.limits[0].params);  // 80 per 100 s
  f.emergency[0] = advance(allowance, CounterState{}, kNow);
  consume(allowance, &f.emergency[0], 70, kNow);  // 10 left
  CallRequest r = all_or_nothing(20, Priority::High);
  r.emergency = true;
  // 3 + 10 < 20; at 6 left (3 s) usage drops below 0.95 and the allowance
  // is gone, so the request needs 20 of its own: 17 s.
  const Decision d = f.run(r);
  EXPECT_FALSE(d.allowed());
  EXPECT_EQ(d.retry_after, 17 * kSecond);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
}

// Dynamic allocation: the history of the window that ends counts in the
// next window's share.
TEST(RetryAfter, DynamicHistoryMayPostponeTheRetryByAWindow) {
  Fixture f;
  AppliedLimit& l = f.add(LimitKind::Tokens, 1000, kHour, 900);
  l.params.dynamic = true;
  l.params.history_weight_ppm = 1'000'000;
  l.params.load_weight_ppm = 0;
  l.params.time_weight_ppm = 0;
  f.states[0].history_ppm = 900'000;
  // Now f = 0.1 (cap 5). Next hour H = (0.9 + 0.9) / 2 = 0.9 again: cap 50.
  // The hour after, H = 0.45: f = 0.55, share 0.275, cap 275 >= 200.
  const CallRequest r = all_or_nothing(200, Priority::High);
  const Decision d = f.run(r);
  EXPECT_EQ(d.outcome, Outcome::DeniedAllOrNothing);
  EXPECT_EQ(d.retry_after, kHourStart + 2 * kHour - kNow);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
}

// Shadow limits never deny, so they never make a retry wait.
TEST(RetryAfter, ShadowLimitsDoNotDelayTheRetry) {
  const LimitRule slow{10, 1000 * kSecond, Algorithm::TokenBucket};
  Fixture f;
  f.add_rule(LimitKind::Tokens, slow).shadow = true;
  consume(slow, &f.states[0], 10, kNow);                           // 200 s for high's 2 tokens
  f.add(LimitKind::Requests, 5, kMinute, 5, ScopeKind::Endpoint);  // 29.75 s
  const CallRequest r = alloc(1, Priority::High);
  const Decision d = f.run(r);
  EXPECT_EQ(d.outcome, Outcome::DeniedRequestLimit);
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.retry_after, kMinuteEnd - kNow);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
}

// ===================================================================== never

TEST(Never, AllOrNothingAboveTheCapacity) {
  const LimitRule bucket{10, 10 * kSecond, Algorithm::TokenBucket};
  PriorityShares all;
  all.ppm[0] = all.ppm[1] = all.ppm[2] = 1'000'000;
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  const Decision d = f.run(all_or_nothing(11, Priority::High), kNow, all);
  EXPECT_EQ(d.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(d.retry_after, 0);
  EXPECT_EQ(d.binding, 0);
  EXPECT_EQ(d.granted, 0);
  EXPECT_EQ(f.run(all_or_nothing(10, Priority::High), kNow, all).granted, 10);
}

TEST(Never, AllOrNothingAboveTheShareOfAFullBucket) {
  const LimitRule bucket{100, 100 * kSecond, Algorithm::TokenBucket};
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  const Decision d = f.run(all_or_nothing(31, Priority::Medium));  // 0.3 * 100 = 30
  EXPECT_EQ(d.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(d.retry_after, 0);
  EXPECT_EQ(f.run(all_or_nothing(30, Priority::Medium)).granted, 30);
}

TEST(Never, AllOrNothingAboveTheShareOfAWholeWindow) {
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 90);
  const Decision d = f.run(all_or_nothing(51, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(d.retry_after, 0);
  // 50 is the share of the next window.
  const Decision fits = f.run(all_or_nothing(50, Priority::High));
  EXPECT_EQ(fits.outcome, Outcome::DeniedAllOrNothing);
  EXPECT_EQ(fits.retry_after, kHourStart + kHour - kNow);
}

TEST(Never, BurstCapBelowTheRequest) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000);
  f.add(LimitKind::Tokens, 20, kMinute).burst_cap = true;
  PriorityShares all;
  all.ppm[0] = 1'000'000;
  const Decision d = f.run(all_or_nothing(21, Priority::High), kNow, all);
  EXPECT_EQ(d.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(d.binding, 1);
}

TEST(Never, EvenTheBestDynamicFactorIsTooSmall) {
  Fixture f;
  AppliedLimit& l = f.add(LimitKind::Tokens, 100);
  l.params.dynamic = true;
  EXPECT_EQ(f.run(all_or_nothing(51, Priority::High)).outcome, Outcome::DeniedExceedsCapacity);
}

// A request above the capacity without all_or_nothing is served partially:
// when it is denied it waits for a token like any other.
TEST(Never, PartialRequestAboveTheCapacityStillWaits) {
  const LimitRule bucket{10, 10 * kSecond, Algorithm::TokenBucket};
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 10, kNow);
  const CallRequest r = alloc(1000, Priority::High);
  const Decision d = f.run(r);
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.retry_after, 2 * kSecond);
  EXPECT_TRUE(exact_retry(f, r, d, kNow));
}

// No share below 1.0 of a 1-token quota is a whole token: neither checks
// nor allocations ever pass it.
TEST(Never, QuotaTooSmallForAnyShare) {
  Fixture f;
  f.add(LimitKind::Tokens, 1);
  const Decision c = f.run(check());
  EXPECT_EQ(c.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(c.retry_after, 0);
  EXPECT_EQ(f.run(alloc(1, Priority::High)).outcome, Outcome::DeniedExceedsCapacity);
}

TEST(Never, ZeroShare) {
  PriorityShares shares;
  shares.ppm[2] = 0;
  Fixture f;
  f.add(LimitKind::Tokens, 1000);
  const Decision d = f.run(alloc(1, Priority::Low), kNow, shares);
  EXPECT_EQ(d.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(d.retry_after, 0);
}

// The impossible limit is reported even when another limit also denies.
TEST(Never, WinsOverAWait) {
  Fixture f;
  f.add(LimitKind::Requests, 5, kMinute, 5);
  f.add(LimitKind::Tokens, 100, kHour, 0, ScopeKind::Endpoint);
  const Decision d = f.run(all_or_nothing(60, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.retry_after, 0);
}

// ================================================================ properties

namespace {

LimitRule small_rule(std::mt19937_64& rng) {
  LimitRule r;
  r.algorithm = static_cast<Algorithm>(rng() % kAlgorithms);
  r.limit = 1 + static_cast<int64_t>(rng() % (rng() % 2 ? 12 : 200)) + (rng() % 4 != 0);
  r.window_micros =
      (1 + static_cast<int64_t>(rng() % 90)) * kSecond + static_cast<int64_t>(rng() % 3);
  if (r.algorithm == Algorithm::TokenBucket || r.algorithm == Algorithm::Gcra)
    r.burst = static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * r.limit + 1));
  return r;
}

struct RandomSetup {
  bool dynamic = false;         // strategies may include dynamic allocation
  bool endpoint_scopes = true;  // limits may be endpoint-wide (the load S)
};

void add_random_limits(Fixture& f, std::mt19937_64& rng, const RandomSetup& setup) {
  const std::size_t nlimits = 1 + rng() % 4;
  for (std::size_t i = 0; i < nlimits; ++i) {
    const ScopeKind scope = static_cast<ScopeKind>(rng() % (setup.endpoint_scopes ? 3 : 2));
    AppliedLimit& l = f.add_rule(rng() % 3 == 0 ? LimitKind::Requests : LimitKind::Tokens,
                                 small_rule(rng), scope);
    l.burst_cap = rng() % 5 == 0;
    l.shadow = rng() % 8 == 0;
    StrategyParams& p = l.params;
    p.dynamic = setup.dynamic && rng() % 2;
    p.history_weight_ppm = static_cast<uint32_t>(rng() % 1'000'001);
    p.load_weight_ppm = static_cast<uint32_t>(rng() % 1'000'001);
    p.time_weight_ppm = static_cast<uint32_t>(rng() % 1'000'001);
    p.emergency = rng() % 2;
    p.emergency_threshold_ppm = static_cast<uint32_t>(rng() % 1'000'001);
    p.override_ppm = static_cast<uint32_t>(rng() % 1'000'001);
    p.burst_mode = rng() % 2;
    p.burst_multiplier_ppm = static_cast<uint32_t>(1'000'000 + rng() % 4'000'001);
    p.burst_window_micros = (1 + static_cast<int64_t>(rng() % 30)) * kSecond;
    p.max_burst_tokens = static_cast<int64_t>(rng() % 50);
    if (rng() % 2) f.with_emergency(i);
    if (rng() % 2) f.with_burst(i);
  }
}

PriorityShares random_shares(std::mt19937_64& rng) {
  PriorityShares s;
  if (rng() % 3 == 0)
    for (uint32_t& share : s.ppm)
      share = rng() % 6 == 0 ? 0 : static_cast<uint32_t>(rng() % 1'000'001);
  return s;
}

CallRequest random_request(std::mt19937_64& rng) {
  static constexpr uint64_t kSizes[] = {4, 30, 300};
  CallRequest r = rng() % 5 == 0 ? check()
                                 : alloc(1 + static_cast<int64_t>(rng() % kSizes[rng() % 3]),
                                         static_cast<Priority>(rng() % 3), rng() % 2 == 0);
  r.burst_mode = rng() % 2;
  r.emergency = rng() % 3 == 0;
  return r;
}

int64_t longest_window(const Fixture& f) {
  int64_t w = 0;
  for (const AppliedLimit& l : f.limits)
    w = std::max({w, l.rule.window_micros, l.params.burst_window_micros});
  return w;
}

struct Counts {
  int denied = 0, never = 0, exact = 0, gave_up = 0;
};

// Random rules, counters built by random traffic, random requests: every
// denial is checked.  exact: also refused 1 us earlier (else only allowed
// at retry_after).
void run_property(uint64_t seed, int rounds, const RandomSetup& setup, bool exact, Counts* counts) {
  std::mt19937_64 rng(seed);
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE(testing::Message() << "seed " << seed << " round " << round);
    Fixture f;
    add_random_limits(f, rng, setup);
    const PriorityShares shares = random_shares(rng);
    const int64_t span = longest_window(f);
    int64_t now = kNow + static_cast<int64_t>(rng() % 1'000'000'000);
    for (int step = 0; step < 60; ++step) {
      now += rng() % 4 == 0 ? 0 : static_cast<int64_t>(rng() % (span / 4 + 1));
      const CallRequest r = random_request(rng);
      const Decision d = f.run(r, now, shares);  // allowed calls charge: the traffic
      if (d.allowed()) {
        ASSERT_EQ(d.retry_after, 0);
        continue;
      }
      ++counts->denied;
      ASSERT_GE(d.binding, 0);
      if (d.outcome == Outcome::DeniedExceedsCapacity) {
        ++counts->never;
        ASSERT_EQ(d.retry_after, 0);
        // Never means never: not soon, not after every window has reset.
        for (int64_t later : {int64_t{1}, span / 2, span, 3 * span, 100 * span + 7})
          ASSERT_FALSE(f.probe(r, now + later, shares).allowed()) << "allowed at +" << later;
        continue;
      }
      ASSERT_GE(d.retry_after, 1);
      if (!d.retry_found) {
        ASSERT_TRUE(setup.dynamic) << "the search gave up without dynamic allocation";
        ++counts->gave_up;
        continue;
      }
      const Decision on_time = f.probe(r, now + d.retry_after, shares);
      ASSERT_TRUE(on_time.allowed())
          << "refused at retry_after " << d.retry_after << ": outcome "
          << static_cast<int>(on_time.outcome) << ", new retry_after " << on_time.retry_after;
      if (!exact) continue;
      ASSERT_FALSE(f.probe(r, now + d.retry_after - 1, shares).allowed())
          << "allowed 1 us before retry_after " << d.retry_after;
      ++counts->exact;
    }
  }
}

}  // namespace

// Every algorithm, priority shares, all_or_nothing and partial requests,
// checks, several limits, burst caps, burst mode, emergency override and
// shadow limits: retry_after is exact for the request that was denied.
TEST(Property, RetryAfterIsExactForThisRequest) {
  Counts counts;
  run_property(0x5e7a11, 1000, RandomSetup{}, true, &counts);
  // The generator reaches both cases often.
  EXPECT_GT(counts.exact, 5000);
  EXPECT_GT(counts.never, 5000);
}

// Dynamic allocation without an endpoint-wide limit (the load S stays 0):
// the share still moves with the position in the window and with the
// history, and retry_after is exact whenever the search found it.
TEST(Property, RetryAfterIsExactWithDynamicAllocationAtConstantLoad) {
  Counts counts;
  RandomSetup setup;
  setup.dynamic = true;
  setup.endpoint_scopes = false;
  run_property(0xd1a9, 1000, setup, true, &counts);
  EXPECT_GT(counts.exact, 5000);
  EXPECT_LT(counts.gave_up, counts.denied / 100);
}

// With the endpoint's load falling during the wait the share grows, so the
// retry may pass earlier than retry_after; it passes at it whenever the
// search found it (it may give up on rare mixes of dynamic quotas).
TEST(Property, RetryAfterAlwaysPassesWithDynamicAllocationUnderLoad) {
  Counts counts;
  RandomSetup setup;
  setup.dynamic = true;
  run_property(0x10ad, 1000, setup, false, &counts);
  EXPECT_GT(counts.denied, 10000);
  EXPECT_LT(counts.gave_up, counts.denied / 100);
}
