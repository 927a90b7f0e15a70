#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "decision_fixture.hpp"
#include "rate_limiter/core/decision.hpp"

using namespace rate_limiter::core;
using namespace rate_limiter::core::test;

TEST(PriorityShare, DefaultSharesOfRemaining) {
  // 1000 remaining: high takes at most 500, medium 300, low 200.
  for (auto [p, expected] :
       {std::pair{Priority::High, 500}, {Priority::Medium, 300}, {Priority::Low, 200}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000);
    Decision d = f.run(alloc(10'000, p));
    EXPECT_EQ(d.outcome, Outcome::PartialGrant);
    EXPECT_EQ(d.granted, expected);
    EXPECT_EQ(d.tokens_remaining, 1000 - expected);
    EXPECT_EQ(f.states[0].used, expected);
  }
}

TEST(PriorityShare, ShareAppliesToRemainingNotLimit) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000, kHour, 600);  // 400 remaining
  Decision d = f.run(alloc(1000, Priority::High));
  EXPECT_EQ(d.granted, 200);
  EXPECT_EQ(d.tokens_remaining, 200);
}

TEST(PriorityShare, FloorIsExactInFixedPoint) {
  EXPECT_EQ(priority_cap(290'000, 100), 29);  // 0.29 * 100 in binary floating point is 28.999...
  EXPECT_EQ(priority_cap(200'000, 4), 0);
  EXPECT_EQ(priority_cap(500'000, 3), 1);
  EXPECT_EQ(priority_cap(1'000'000, kMaxQuantity), kMaxQuantity);
  EXPECT_EQ(priority_cap(300'000, 0), 0);
}

TEST(PriorityShare, SmallRequestGetsEverything) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000);
  Decision d = f.run(alloc(100, Priority::Low));
  EXPECT_EQ(d.outcome, Outcome::Granted);
  EXPECT_EQ(d.granted, 100);
  EXPECT_EQ(d.tokens_remaining, 900);
  EXPECT_EQ(d.retry_after, 0);
}

TEST(PriorityShare, DeniedWhenShareRoundsToZero) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000, kHour, 996);  // 4 remaining; low: floor(0.2*4) = 0
  Decision d = f.run(alloc(1, Priority::Low));
  EXPECT_EQ(d.outcome, Outcome::DeniedPriorityShare);
  EXPECT_EQ(d.granted, 0);
  EXPECT_EQ(f.states[0].used, 996);
  EXPECT_GT(d.retry_after, 0);
  // ... while high still gets floor(0.5*4) = 2.
  Decision h = f.run(alloc(5, Priority::High));
  EXPECT_EQ(h.granted, 2);
}

TEST(PriorityShare, ConfiguredSharesAreUsed) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000);
  PriorityShares shares;
  shares.ppm[static_cast<int>(Priority::Medium)] = 123'456;
  EXPECT_EQ(f.run(alloc(1000, Priority::Medium), kNow, shares).granted, 123);
}

TEST(Allocation, AllOrNothingDeniesPartialAndChargesNothing) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000, kHour, 200);
  Decision d = f.run(alloc(450, Priority::High, true));  // high may take 400 of 800
  EXPECT_EQ(d.outcome, Outcome::DeniedAllOrNothing);
  EXPECT_EQ(d.granted, 0);
  EXPECT_EQ(f.states[0].used, 200);
  EXPECT_EQ(d.tokens_remaining, 800);
  EXPECT_EQ(f.run(alloc(400, Priority::High, true)).granted, 400);
}

TEST(Allocation, ExhaustedQuotaIsDenied) {
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 100);
  Decision d = f.run(alloc(1, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.tokens_remaining, 0);
  EXPECT_EQ(d.reset_at, aligned_window_start(kNow, kHour) + kHour);
  EXPECT_EQ(d.retry_after, d.reset_at - kNow);
}

TEST(Allocation, LoweredLimitBelowUsageReportsZeroRemaining) {
  Fixture f;
  f.add(LimitKind::Tokens, 50, kHour, 80);
  Decision d = f.run(alloc(1, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.tokens_remaining, 0);
}

TEST(Allocation, MostRestrictiveScopeDecidesAndAllScopesAreCharged) {
  Fixture f;
  f.add(LimitKind::Tokens, 10'000, kHour, 0, ScopeKind::UserEndpoint);
  f.add(LimitKind::Tokens, 1'000, kHour, 800, ScopeKind::User);  // 200 remaining
  f.add(LimitKind::Tokens, 1'000'000, kHour, 0, ScopeKind::Endpoint);
  Decision d = f.run(alloc(500, Priority::High));
  EXPECT_EQ(d.granted, 100);  // floor(0.5 * min(10000, 200, 1e6))
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.tokens_remaining, 100);
  EXPECT_EQ(f.states[0].used, 100);
  EXPECT_EQ(f.states[1].used, 900);
  EXPECT_EQ(f.states[2].used, 100);
}

TEST(Allocation, RequestLimitDenialChargesNoScope) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000);
  f.add(LimitKind::Requests, 5, kHour, 5);
  f.add(LimitKind::Requests, 100, kHour, 3, ScopeKind::Endpoint);
  Decision d = f.run(alloc(10, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedRequestLimit);
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(f.states[0].used, 0);
  EXPECT_EQ(f.states[1].used, 5);
  EXPECT_EQ(f.states[2].used, 3);
}

TEST(Allocation, CountsOneRequestAgainstEveryRequestLimit) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000);
  f.add(LimitKind::Requests, 5);
  f.add(LimitKind::Requests, 100, kHour, 10, ScopeKind::Endpoint);
  Decision d = f.run(alloc(10, Priority::High));
  EXPECT_EQ(d.granted, 10);
  EXPECT_EQ(f.states[1].used, 1);
  EXPECT_EQ(f.states[2].used, 11);
  EXPECT_EQ(d.requests_remaining, 4);
  EXPECT_EQ(d.binding, 0);  // the token quota describes an allocation
}

TEST(Allocation, NoLimitGrantsEverything) {
  Fixture f;
  Decision d = f.run(alloc(12345, Priority::Low));
  EXPECT_EQ(d.outcome, Outcome::NoLimit);
  EXPECT_EQ(d.granted, 12345);
  EXPECT_EQ(d.tokens_remaining, -1);
  EXPECT_EQ(d.binding, -1);
}

TEST(Allocation, FailOpenLimitIsSkipped) {
  Fixture f;
  f.add(LimitKind::Tokens, 10, kHour, 10);
  f.limits[0].state = nullptr;
  Decision d = f.run(alloc(7, Priority::Low));
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.granted, 7);
  EXPECT_EQ(f.states[0].used, 10);
}

TEST(Allocation, DeniedRetryAfterUsesTheLatestResetAmongDenyingLimits) {
  Fixture f;
  f.add(LimitKind::Requests, 1, kHour, 1);
  f.add(LimitKind::Requests, 1, 24 * kHour, 1, ScopeKind::Endpoint);
  Decision d = f.run(check());
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.reset_at, aligned_window_start(kNow, 24 * kHour) + 24 * kHour);
  EXPECT_GT(d.retry_after, 0);
  EXPECT_LE(d.retry_after, 24 * kHour);
}

TEST(Check, CountsRequestsAndStopsAtTheLimit) {
  Fixture f;
  f.add(LimitKind::Requests, 3);
  for (int i = 0; i < 3; ++i) {
    Decision d = f.run(check());
    EXPECT_TRUE(d.allowed());
    EXPECT_EQ(d.binding_remaining, 2 - i);
  }
  Decision d = f.run(check());
  EXPECT_EQ(d.outcome, Outcome::DeniedRequestLimit);
  EXPECT_EQ(f.states[0].used, 3);
}

TEST(Check, ExhaustedTokenQuotaDeniesWithoutCharging) {
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 100);
  f.add(LimitKind::Requests, 10);
  Decision d = f.run(check());
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(f.states[1].used, 0);
}

TEST(Check, BindingIsTheSmallestFraction) {
  Fixture f;
  f.add(LimitKind::Requests, 1000, kHour, 500);  // 499/1000 after the call
  f.add(LimitKind::Tokens, 100, kHour, 90);      // 10/100: tighter
  Decision d = f.run(check());
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.binding_remaining, 10);
}

TEST(Window, NewWindowRestoresQuota) {
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 100);
  const int64_t next = aligned_window_start(kNow, kHour) + kHour;
  EXPECT_FALSE(f.run(alloc(1, Priority::High), next - 1).allowed());
  Decision d = f.run(alloc(100, Priority::High), next);
  EXPECT_EQ(d.granted, 50);
  EXPECT_EQ(f.states[0].window_start, next);
}

// Property: over random call sequences with a fake clock, the tokens and
// requests granted inside any window never exceed the limit, the counter
// always equals what was granted in its window, and a denied call changes
// no count.
TEST(Property, NeverGrantsMoreThanTheLimitInAnyWindow) {
  const uint64_t seed = 20261127;
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 200; ++round) {
    const int64_t window = (1 + static_cast<int64_t>(rng() % 120)) * kMicrosPerSecond;
    const int64_t token_limit = 1 + static_cast<int64_t>(rng() % 5000);
    const int64_t request_limit = 1 + static_cast<int64_t>(rng() % 50);
    CounterState tokens, requests;
    AppliedLimit limits[2];
    limits[0].kind = LimitKind::Tokens;
    limits[0].rule = LimitRule{token_limit, window};
    limits[0].state = &tokens;
    limits[1].kind = LimitKind::Requests;
    limits[1].rule = LimitRule{request_limit, window};
    limits[1].state = &requests;

    int64_t now = kNow + static_cast<int64_t>(rng() % 1'000'000'000);
    int64_t win = aligned_window_start(now, window);
    int64_t granted_tokens = 0, granted_requests = 0;
    for (int step = 0; step < 500; ++step) {
      now += static_cast<int64_t>(rng() % (window / 10 + 1));
      if (aligned_window_start(now, window) != win) {
        win = aligned_window_start(now, window);
        granted_tokens = granted_requests = 0;
      }
      const CounterState before_t = tokens, before_r = requests;
      CallRequest r = rng() % 4 == 0 ? check()
                                     : alloc(1 + static_cast<int64_t>(rng() % 800),
                                             static_cast<Priority>(rng() % 3), rng() % 2);
      Decision d = decide(r, limits, 2, PriorityShares{}, now);
      if (d.allowed()) {
        granted_tokens += d.granted;
        granted_requests += 1;
        EXPECT_LE(d.granted, r.tokens);
      } else {
        EXPECT_EQ(d.granted, 0);
        EXPECT_EQ(tokens.used, advance(limits[0].rule, before_t, now).used);
        EXPECT_EQ(requests.used, advance(limits[1].rule, before_r, now).used);
        if (d.outcome == Outcome::DeniedExceedsCapacity) {
          // More than the share of a whole window, all or nothing: never.
          EXPECT_TRUE(r.all_or_nothing);
          EXPECT_EQ(d.retry_after, 0);
        } else {
          EXPECT_GT(d.retry_after, 0);
          EXPECT_LE(d.retry_after, window);
        }
      }
      ASSERT_LE(granted_tokens, token_limit);
      ASSERT_LE(granted_requests, request_limit);
      ASSERT_EQ(tokens.used, granted_tokens);
      ASSERT_EQ(requests.used, granted_requests);
      ASSERT_EQ(tokens.window_start, win);
    }
  }
}

TEST(Exhaustion, QuotaIsExhaustedWhenNoPriorityCanGetAToken) {
  // With the default shares, high stops at 1 remaining, medium at 3, low at 4:
  // 1 remaining is exhausted for everyone.
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 99);
  EXPECT_EQ(f.run(alloc(1, Priority::High)).outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(f.run(check()).outcome, Outcome::DeniedTokenQuota);
  // 3 remaining: high still gets 1, medium (0.9) and low (0.6) get nothing.
  Fixture g;
  g.add(LimitKind::Tokens, 100, kHour, 97);
  EXPECT_EQ(g.run(alloc(1, Priority::Medium)).outcome, Outcome::DeniedPriorityShare);
  EXPECT_TRUE(g.run(check()).allowed());
  EXPECT_EQ(g.run(alloc(5, Priority::High)).granted, 1);
}

TEST(Exhaustion, FullShareDrainsTheLastToken) {
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 99);
  PriorityShares shares;
  shares.ppm[static_cast<int>(Priority::High)] = kShareScale;
  Decision d = f.run(alloc(5, Priority::High), kNow, shares);
  EXPECT_EQ(d.granted, 1);
  EXPECT_EQ(d.tokens_remaining, 0);
  EXPECT_EQ(f.run(check(), kNow, shares).outcome, Outcome::DeniedTokenQuota);
}

TEST(Binding, BothKindsDenyingReportTheLaterReset) {
  // A minute request limit and a day token quota are both used up: a retry
  // at the end of the minute would still fail, so the day quota binds.
  constexpr int64_t kMinute = 60 * kMicrosPerSecond;
  Fixture f;
  f.add(LimitKind::Requests, 1, kMinute, 1);
  f.add(LimitKind::Tokens, 2, 24 * kHour, 1);  // 1 left: exhausted
  Decision d = f.run(check());
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.reset_at, aligned_window_start(kNow, 24 * kHour) + 24 * kHour);
  EXPECT_EQ(d.retry_after, d.reset_at - kNow);
  // Only the request limit denies: it binds, with its own reason.
  Fixture g;
  g.add(LimitKind::Requests, 1, kMinute, 1);
  g.add(LimitKind::Tokens, 100, 24 * kHour, 1);
  Decision e = g.run(check());
  EXPECT_EQ(e.outcome, Outcome::DeniedRequestLimit);
  EXPECT_EQ(e.binding, 0);
  EXPECT_LE(e.retry_after, kMinute);
}

// Property: a denied call's retry_after is the earliest instant at which the
// same call can succeed (for limits that only reset, never for new demand).
TEST(Property, RetryAfterIsExact) {
  const uint64_t seed = 99;
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 300; ++round) {
    const int64_t w1 = (1 + static_cast<int64_t>(rng() % 90)) * kMicrosPerSecond;
    const int64_t w2 = (1 + static_cast<int64_t>(rng() % 5000)) * kMicrosPerSecond;
    Fixture f;
    f.add(LimitKind::Requests, 1 + static_cast<int64_t>(rng() % 3), w1);
    // At least 2 tokens: below that, no share under 1.0 can ever grant one.
    f.add(LimitKind::Tokens, 2 + static_cast<int64_t>(rng() % 20), w2);
    int64_t now = kNow + static_cast<int64_t>(rng() % 1'000'000'000);
    // Use the limits up with greedy high-priority allocations.
    Decision d;
    for (int i = 0; i < 100; ++i) {
      d = f.run(alloc(1000, Priority::High), now);
      if (!d.allowed()) break;
    }
    ASSERT_FALSE(d.allowed());
    const int64_t retry = d.retry_after;
    ASSERT_GT(retry, 0);
    std::vector<CounterState> saved = f.states;
    Decision early = f.run(alloc(1, Priority::High), now + retry - 1);
    EXPECT_FALSE(early.allowed()) << "round " << round;
    f.states = saved;
    f.relink();
    Decision on_time = f.run(alloc(1, Priority::High), now + retry);
    EXPECT_TRUE(on_time.allowed()) << "round " << round;
  }
}

// ================================================================ strategies

namespace {

constexpr int64_t kMinute = 60 * kMicrosPerSecond;
constexpr int64_t kHourStart = 1'795'784'400'000'000;  // 13:00, the hour window of kNow
constexpr int64_t kMinuteEnd = 1'795'787'160'000'000;  // 13:46, end of kNow's minute

StrategyParams dynamic_params(uint32_t history_w, uint32_t load_w, uint32_t time_w) {
  StrategyParams p;
  p.dynamic = true;
  p.history_weight_ppm = history_w;
  p.load_weight_ppm = load_w;
  p.time_weight_ppm = time_w;
  return p;
}

CallRequest emergency_alloc(int64_t tokens, Priority p = Priority::High) {
  CallRequest r = alloc(tokens, p);
  r.emergency = true;
  return r;
}

CallRequest burst_alloc(int64_t tokens, Priority p = Priority::Medium) {
  CallRequest r = alloc(tokens, p);
  r.burst_mode = true;
  return r;
}

}  // namespace

TEST(Dynamic, FactorFormulaIsExact) {
  StrategyParams p = dynamic_params(300'000, 200'000, 100'000);
  // 1 - (0.3 * 0.5 + 0.2 * 0.6 + 0.1 * 0.25) = 0.705
  EXPECT_EQ(dynamic_factor_ppm(p, 500'000, 600'000, 250'000), 705'000u);
  EXPECT_EQ(dynamic_factor_ppm(p, 0, 0, 0), 1'000'000u);
  EXPECT_EQ(dynamic_factor_ppm(p, 1, 0, 0), 999'999u);  // 0.9999997, floored
  p = dynamic_params(1'000'000, 1'000'000, 1'000'000);
  EXPECT_EQ(dynamic_factor_ppm(p, 330'000, 330'000, 330'000), 10'000u);  // exactly 0.01
  EXPECT_EQ(dynamic_factor_ppm(p, 330'000, 330'000, 329'000), 11'000u);
  EXPECT_EQ(dynamic_factor_ppm(p, 1'000'000, 1'000'000, 1'000'000), kMinDynamicFactorPpm);
  p = dynamic_params(4'000'000'000u, 4'000'000'000u, 4'000'000'000u);  // no overflow
  EXPECT_EQ(dynamic_factor_ppm(p, 1'000'000, 1'000'000, 1'000'000), kMinDynamicFactorPpm);
}

TEST(Dynamic, HistoryWeightLowersTheShare) {
  // At the window start (T = 0) without endpoint limits (S = 0), H = 0.5:
  // f = 1 - history_w * 0.5; medium's cap of 1000 is floor(0.3 * f * 1000).
  for (auto [weight, expected] : {std::pair{300'000u, 255}, {600'000u, 210}, {0u, 300}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000).params = dynamic_params(weight, 200'000, 100'000);
    f.states[0].history_ppm = 500'000;
    Decision d = f.run(alloc(1000, Priority::Medium), kHourStart);
    EXPECT_EQ(d.granted, expected) << weight;
    EXPECT_EQ(d.strategy, weight > 0 ? Strategy::Dynamic : Strategy::Priority);
  }
}

TEST(Dynamic, HistoryComesFromPastWindows) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000, kHour, 800).params = dynamic_params(300'000, 0, 0);
  // Next window: H = (0 + 0.8) / 2 = 0.4, f = 0.88, medium share 0.264.
  Decision d = f.run(alloc(1000, Priority::Medium), kHourStart + kHour);
  EXPECT_EQ(f.states[0].history_ppm, 400'000u);
  EXPECT_EQ(d.granted, 264);
}

TEST(Dynamic, LoadWeightUsesTheBusiestEndpointLimit) {
  // f = 1 - weight * S with S = 0.9 (the busiest endpoint limit); medium's
  // cap is floor(0.3 * f * 1000).
  for (auto [weight, expected] : {std::pair{200'000u, 246}, {500'000u, 165}, {0u, 300}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000).params = dynamic_params(0, weight, 0);
    f.add(LimitKind::Requests, 1000, kHour, 600, ScopeKind::Endpoint);  // 0.6
    f.add(LimitKind::Requests, 1000, kHour, 900, ScopeKind::Endpoint);  // 0.9: S
    f.add(LimitKind::Requests, 1000, kHour, 990, ScopeKind::User);      // not an endpoint
    Decision d = f.run(alloc(1000, Priority::Medium), kHourStart);
    EXPECT_EQ(d.granted, expected) << weight;
  }
}

TEST(Dynamic, TimeWeightUsesThePositionInTheWindow) {
  // 15 minutes into the hour: T = 0.25.
  for (auto [weight, expected] : {std::pair{100'000u, 292}, {400'000u, 270}, {0u, 300}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000).params = dynamic_params(0, 0, weight);
    Decision d = f.run(alloc(1000, Priority::Medium), kHourStart + 15 * kMinute);
    EXPECT_EQ(d.granted, expected) << weight;  // floor(0.3 * (1 - weight / 4) * 1000)
  }
}

TEST(Dynamic, AllWeightsTogetherPerPriority) {
  // f = 0.705 (see FactorFormulaIsExact); shares 0.3525, 0.2115, 0.141.
  for (auto [p, expected] :
       {std::pair{Priority::High, 352}, {Priority::Medium, 211}, {Priority::Low, 141}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000).params = dynamic_params(300'000, 200'000, 100'000);
    f.add(LimitKind::Requests, 1000, kHour, 600, ScopeKind::Endpoint);
    f.states[0].history_ppm = 500'000;
    Decision d = f.run(alloc(1000, p), kHourStart + 15 * kMinute);
    EXPECT_EQ(d.granted, expected);
    EXPECT_EQ(d.strategy, Strategy::Dynamic);
    EXPECT_EQ(d.binding, 0);
  }
}

TEST(Dynamic, DisabledIgnoresTheWeights) {
  Fixture f;
  StrategyParams p = dynamic_params(1'000'000, 1'000'000, 1'000'000);
  p.dynamic = false;
  f.add(LimitKind::Tokens, 1000).params = p;
  f.states[0].history_ppm = 1'000'000;
  Decision d = f.run(alloc(1000, Priority::Medium));
  EXPECT_EQ(d.granted, 300);
  EXPECT_EQ(d.strategy, Strategy::Priority);
}

TEST(Dynamic, LowersSharesButNotExhaustion) {
  // 3 remaining: the base high share still gets 1, so the quota is not
  // exhausted; the dynamic share (0.5 * 0.01) gets nothing.
  Fixture f;
  f.add(LimitKind::Tokens, 1000, kHour, 997).params = dynamic_params(1'000'000, 0, 0);
  f.states[0].history_ppm = 1'000'000;
  Decision d = f.run(alloc(1, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedPriorityShare);
  // It lacks 200 units (0.005 * 200 = 1): only the next window has them.
  EXPECT_EQ(d.retry_after, kHourStart + kHour - kNow);
}

TEST(Emergency, PastTheThresholdTakesTheOverrideAllowance) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000, kHour, 960);  // usage 0.96 >= 0.95
  f.with_emergency(0);
  Decision d = f.run(emergency_alloc(2000));
  EXPECT_EQ(d.outcome, Outcome::PartialGrant);
  EXPECT_EQ(d.granted, 840);  // 40 remaining + floor(0.8 * 1000), no share
  EXPECT_EQ(d.strategy, Strategy::Emergency);
  EXPECT_EQ(d.emergency_units, 800);
  EXPECT_EQ(d.charges[0].units, 40);
  EXPECT_EQ(d.charges[0].window, kHourStart);
  EXPECT_EQ(d.charges[0].emergency_units, 800);
  EXPECT_EQ(d.charges[0].emergency_window, kHourStart);
  EXPECT_EQ(f.states[0].used, 1000);
  EXPECT_EQ(f.emergency[0].used, 800);
  EXPECT_EQ(f.emergency[0].limit, 800);
  EXPECT_EQ(d.tokens_remaining, 0);
  Decision again = f.run(emergency_alloc(1));
  EXPECT_EQ(again.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(again.retry_after, kHourStart + kHour - kNow);
}

TEST(Emergency, OverridePercentageSizesTheAllowance) {
  for (auto [override_ppm, expected] :
       {std::pair{500'000u, 540}, {250'000u, 290}, {1'000'000u, 1040}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000, kHour, 960).params.override_ppm = override_ppm;
    f.with_emergency(0);
    EXPECT_EQ(f.run(emergency_alloc(5000)).granted, expected) << override_ppm;
  }
  StrategyParams p;
  p.override_ppm = 800'000;
  EXPECT_EQ(emergency_rule(LimitRule{1000, kHour}, p).limit, 800);
  EXPECT_EQ(emergency_rule(LimitRule{1000, kHour}, p).window_micros, kHour);
  EXPECT_EQ(emergency_rule(LimitRule{1000, kHour}, p).algorithm, Algorithm::FixedWindow);
  EXPECT_EQ(emergency_rule(LimitRule{1, kHour}, p).limit, 1);  // at least 1
  // 0.8 of the capacity of a gcra rule (max_burst + 1 = 10).
  EXPECT_EQ(emergency_rule(LimitRule{100, kHour, Algorithm::Gcra, 9}, p).limit, 8);
  p.override_ppm = 0;
  EXPECT_EQ(emergency_rule(LimitRule{1000, kHour}, p).limit, 0);  // no allowance
}

TEST(Emergency, ThresholdDecidesWhenTheAllowanceOpens) {
  // (used, threshold, granted): below the threshold everything remaining
  // (high's share would be half of it), at or above it + 800.
  struct Case {
    int64_t used;
    uint32_t threshold;
    int64_t granted, emergency_units;
  };
  for (const Case& c : {Case{940, 950'000, 60, 0}, Case{950, 950'000, 850, 800},
                        Case{940, 900'000, 860, 800}, Case{0, 0, 1800, 800}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000, kHour, c.used).params.emergency_threshold_ppm = c.threshold;
    f.with_emergency(0);
    Decision d = f.run(emergency_alloc(5000));
    EXPECT_EQ(d.granted, c.granted) << c.used << " " << c.threshold;
    EXPECT_EQ(d.emergency_units, c.emergency_units);
    EXPECT_EQ(d.strategy, Strategy::Emergency);
  }
}

TEST(Emergency, NotAskedDisabledOrWithoutCounterIsTheNormalShare) {
  for (int variant = 0; variant < 3; ++variant) {
    Fixture f;
    AppliedLimit& l = f.add(LimitKind::Tokens, 1000, kHour, 960);
    if (variant == 1) l.params.emergency = false;
    if (variant != 2) f.with_emergency(0);
    CallRequest r = variant == 0 ? alloc(2000, Priority::High) : emergency_alloc(2000);
    Decision d = f.run(r);
    EXPECT_EQ(d.granted, 20) << variant;  // floor(0.5 * 40)
    EXPECT_EQ(d.emergency_units, 0);
    EXPECT_EQ(d.strategy, Strategy::Priority);
    EXPECT_EQ(f.emergency[0].window_micros, 0) << "emergency counter untouched";
  }
}

TEST(Emergency, RequestLimitsAdmitFromTheAllowance) {
  Fixture f;
  f.add(LimitKind::Requests, 10, kHour, 10);
  f.with_emergency(0);  // allowance floor(0.8 * 10) = 8
  CallRequest r = check();
  r.emergency = true;
  for (int i = 0; i < 8; ++i) {
    Decision d = f.run(r);
    ASSERT_TRUE(d.allowed()) << i;
    EXPECT_EQ(d.charges[0].units, 0);
    EXPECT_EQ(d.charges[0].emergency_units, 1);
    EXPECT_EQ(d.emergency_units, 1);
    EXPECT_EQ(d.strategy, Strategy::None);  // a check
  }
  Decision d = f.run(r);
  EXPECT_EQ(d.outcome, Outcome::DeniedRequestLimit);
  EXPECT_EQ(f.emergency[0].used, 8);
  // An allocation under the same exhausted request limit: granted its share,
  // the request taken from the allowance of another limit.
  Fixture g;
  g.add(LimitKind::Tokens, 1000);
  g.add(LimitKind::Requests, 10, kHour, 10);
  g.with_emergency(1);
  Decision e = g.run(emergency_alloc(2000, Priority::Medium));
  EXPECT_EQ(e.granted, 300);  // the quota has no emergency counter: normal share
  EXPECT_EQ(e.charges[1].emergency_units, 1);
  EXPECT_EQ(e.strategy, Strategy::Emergency);
}

TEST(Emergency, WorksOnBucketQuotas) {
  Fixture f;
  const LimitRule bucket{100, kMinute, Algorithm::TokenBucket};
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 100, kNow);  // empty: usage 1.0
  f.with_emergency(0);
  Decision d = f.run(emergency_alloc(1000));
  EXPECT_EQ(d.granted, 80);
  EXPECT_EQ(d.charges[0].units, 0);
  EXPECT_EQ(d.charges[0].emergency_window, aligned_window_start(kNow, kMinute));
  // Half a minute later the bucket holds 50 (usage 0.5): those, no extra.
  Decision later = f.run(emergency_alloc(1000), kNow + 30 * kMicrosPerSecond);
  EXPECT_EQ(later.granted, 50);
  EXPECT_EQ(later.emergency_units, 0);
}

TEST(Emergency, BurstCapStillBinds) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000, kHour, 960);
  AppliedLimit& cap = f.add(LimitKind::Tokens, 100, kMinute, 100);
  cap.burst_cap = true;  // takes no strategy, even with an emergency counter
  f.with_emergency(0);
  f.with_emergency(1);
  Decision d = f.run(emergency_alloc(10));
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.retry_after, kMinuteEnd - kNow);
  EXPECT_EQ(f.emergency[1].window_micros, 0);
}

TEST(Burst, MultiplierRaisesTheCapWithinTheBudget) {
  // medium 0.3 of 1000 = 300; burst cap_hi = floor(min(1, 0.3 * m) * 1000).
  for (auto [multiplier, expected] :
       {std::pair{2'000'000u, 600}, {1'500'000u, 450}, {1'000'000u, 300}}) {
    Fixture f;
    f.add(LimitKind::Tokens, 1000).params.burst_multiplier_ppm = multiplier;
    f.with_burst(0);
    Decision d = f.run(burst_alloc(1000));
    EXPECT_EQ(d.granted, expected) << multiplier;
    EXPECT_EQ(d.burst_tokens, expected - 300);
    EXPECT_EQ(d.charges[0].units, expected);
    EXPECT_EQ(d.charges[0].burst_units, expected - 300);
    EXPECT_EQ(d.strategy, expected > 300 ? Strategy::Burst : Strategy::Priority);
    if (expected > 300) {
      EXPECT_EQ(d.charges[0].burst_window, aligned_window_start(kNow, 15 * kMinute));
      EXPECT_EQ(f.burst[0].used, expected - 300);
      EXPECT_EQ(f.burst[0].limit, 1000);
    }
  }
}

TEST(Burst, RaisedShareIsCappedAtEverythingRemaining) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000).params.burst_multiplier_ppm = 3'000'000;  // high: 1.5 -> 1.0
  f.with_burst(0);
  Decision d = f.run(burst_alloc(5000, Priority::High));
  EXPECT_EQ(d.granted, 1000);
  EXPECT_EQ(d.burst_tokens, 500);
  EXPECT_EQ(d.tokens_remaining, 0);
}

TEST(Burst, MaxBurstTokensBoundsTheBudget) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000).params.max_burst_tokens = 100;
  f.with_burst(0);
  Decision d = f.run(burst_alloc(1000));
  EXPECT_EQ(d.granted, 400);  // 300 + min(300, 100)
  EXPECT_EQ(d.burst_tokens, 100);
  Decision again = f.run(burst_alloc(1000));  // 600 left: 180, budget spent
  EXPECT_EQ(again.granted, 180);
  EXPECT_EQ(again.burst_tokens, 0);
  EXPECT_EQ(again.strategy, Strategy::Priority);
}

TEST(Burst, BudgetRefillsPerBurstWindow) {
  // 13:05: burst windows of 15 minutes end at 13:15, inside the hour window.
  for (auto [burst_window, expected] : {std::pair{15 * kMinute, 280}, {30 * kMinute, 180}}) {
    Fixture f;
    StrategyParams& p = f.add(LimitKind::Tokens, 1000).params;
    p.max_burst_tokens = 100;
    p.burst_window_micros = burst_window;
    f.with_burst(0);
    ASSERT_EQ(f.run(burst_alloc(1000), kHourStart + 5 * kMinute).granted, 400);
    // 600 left: 180 + min(180, budget)
    Decision d = f.run(burst_alloc(1000), kHourStart + 15 * kMinute);
    EXPECT_EQ(d.granted, expected) << burst_window;
  }
}

TEST(Burst, NotAskedDisabledEmptyOrSmallTakeNoBudget) {
  for (int variant = 0; variant < 5; ++variant) {
    Fixture f;
    AppliedLimit& l = f.add(LimitKind::Tokens, 1000);
    if (variant == 1) l.params.burst_mode = false;
    if (variant == 2) l.params.max_burst_tokens = 0;
    if (variant != 3) f.with_burst(0);
    CallRequest r = variant == 0 ? alloc(1000, Priority::Medium) : burst_alloc(1000);
    if (variant == 4) r.tokens = 200;  // within the normal cap
    Decision d = f.run(r);
    EXPECT_EQ(d.granted, variant == 4 ? 200 : 300) << variant;
    EXPECT_EQ(d.burst_tokens, 0);
    EXPECT_EQ(d.strategy, Strategy::Priority);
    EXPECT_EQ(f.burst[0].used, 0);
  }
  StrategyParams p;
  EXPECT_EQ(burst_budget_rule(p).limit, 1000);
  EXPECT_EQ(burst_budget_rule(p).window_micros, 15 * kMinute);
  p.max_burst_tokens = 0;
  EXPECT_EQ(burst_budget_rule(p).limit, 0);
}

TEST(Burst, EachQuotaChargesWhatItGaveAboveItsCap) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000);    // cap 300, raised 600
  f.add(LimitKind::Tokens, 10'000);  // cap 3000
  f.with_burst(0);
  f.with_burst(1);
  Decision d = f.run(burst_alloc(500));
  EXPECT_EQ(d.granted, 500);
  EXPECT_EQ(d.charges[0].burst_units, 200);
  EXPECT_EQ(d.charges[1].burst_units, 0);
  EXPECT_EQ(d.burst_tokens, 200);
  EXPECT_EQ(f.burst[1].used, 0);
}

TEST(Burst, MultipliesTheDynamicShare) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000).params = dynamic_params(300'000, 0, 0);  // H 0.5: share 0.255
  f.states[0].history_ppm = 500'000;
  f.limits[0].params.burst_mode = true;
  f.with_burst(0);
  Decision d = f.run(burst_alloc(1000), kHourStart);
  EXPECT_EQ(d.granted, 510);
  EXPECT_EQ(d.burst_tokens, 255);
  EXPECT_EQ(d.strategy, Strategy::Burst);
}

TEST(BurstCap, IsAHardCapWithoutShareOrStrategies) {
  Fixture f;
  f.add(LimitKind::Tokens, 1000);
  AppliedLimit& cap = f.add(LimitKind::Tokens, 100, kMinute);
  cap.burst_cap = true;
  cap.params = dynamic_params(1'000'000, 1'000'000, 1'000'000);  // ignored
  f.with_burst(1);
  Decision d = f.run(burst_alloc(500));
  EXPECT_EQ(d.granted, 100);  // min(0.3 * 1000, all 100 of the cap)
  EXPECT_EQ(d.binding, 1);
  EXPECT_EQ(d.charges[1].units, 100);
  EXPECT_EQ(d.charges[1].burst_units, 0);
  Decision denied = f.run(alloc(1, Priority::High));
  EXPECT_EQ(denied.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(denied.binding, 1);
  EXPECT_EQ(denied.reset_at, kMinuteEnd);
  EXPECT_EQ(denied.retry_after, kMinuteEnd - kNow);
  // The last token of a cap goes to anyone.
  Fixture g;
  g.add(LimitKind::Tokens, 1000);
  g.add(LimitKind::Tokens, 100, kMinute, 99).burst_cap = true;
  EXPECT_EQ(g.run(alloc(5, Priority::Low)).granted, 1);
}

TEST(RetryAfter, ExhaustedTokenBucketWaitsForTheTokensItLacks) {
  const LimitRule bucket{10, 10 * kMicrosPerSecond, Algorithm::TokenBucket};  // T = 1 s
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 10, kNow);
  Decision d = f.run(alloc(1, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.retry_after, 2 * kMicrosPerSecond);  // high's 0.5 needs 2 tokens
  EXPECT_EQ(d.reset_at, kNow + 10 * kMicrosPerSecond);
  const std::vector<CounterState> saved = f.states;
  EXPECT_FALSE(f.run(alloc(1, Priority::High), kNow + d.retry_after - 1).allowed());
  f.states = saved;
  EXPECT_EQ(f.run(alloc(1, Priority::High), kNow + d.retry_after).granted, 1);
}

TEST(RetryAfter, PriorityShareOnABucketWaitsForItsShare) {
  const LimitRule bucket{10, 10 * kMicrosPerSecond, Algorithm::Gcra, 9};  // capacity 10
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 6, kNow);  // 4 left: low's 0.2 gets 0
  Decision d = f.run(alloc(1, Priority::Low));
  EXPECT_EQ(d.outcome, Outcome::DeniedPriorityShare);
  EXPECT_EQ(d.retry_after, kMicrosPerSecond);  // 5 needed
  EXPECT_EQ(f.run(alloc(1, Priority::Low), kNow + kMicrosPerSecond).granted, 1);
}

TEST(RetryAfter, AllOrNothingWaitsUntilTheShareCoversTheRequest) {
  const LimitRule bucket{100, 100 * kMicrosPerSecond, Algorithm::TokenBucket};  // T = 1 s
  Fixture f;
  f.add_rule(LimitKind::Tokens, bucket);
  consume(bucket, &f.states[0], 60, kNow);  // 40 left: medium gets 12
  Decision d = f.run(alloc(20, Priority::Medium, true));
  EXPECT_EQ(d.outcome, Outcome::DeniedAllOrNothing);
  EXPECT_EQ(d.retry_after, 27 * kMicrosPerSecond);  // floor(0.3 * 67) = 20
  const std::vector<CounterState> saved = f.states;
  EXPECT_FALSE(f.run(alloc(20, Priority::Medium, true), kNow + d.retry_after - 1).allowed());
  f.states = saved;
  EXPECT_EQ(f.run(alloc(20, Priority::Medium, true), kNow + d.retry_after).granted, 20);
  // More than the share of a full bucket: no wait helps.
  Fixture g;
  g.add_rule(LimitKind::Tokens, bucket);
  Decision never = g.run(alloc(50, Priority::Medium, true));
  EXPECT_EQ(never.outcome, Outcome::DeniedExceedsCapacity);
  EXPECT_EQ(never.retry_after, 0);
}

TEST(RetryAfter, TheLongestWaitBinds) {
  for (auto [window, binds_tokens] :
       {std::pair{10 * kMicrosPerSecond, false}, {1000 * kMicrosPerSecond, true}}) {
    const LimitRule bucket{10, window, Algorithm::TokenBucket};
    Fixture f;
    f.add_rule(LimitKind::Tokens, bucket);
    consume(bucket, &f.states[0], 10, kNow);    // high needs 2 tokens: 2 s or 200 s
    f.add(LimitKind::Requests, 5, kMinute, 5);  // 29.75 s
    Decision d = f.run(alloc(1, Priority::High));
    EXPECT_EQ(d.outcome, binds_tokens ? Outcome::DeniedTokenQuota : Outcome::DeniedRequestLimit);
    EXPECT_EQ(d.binding, binds_tokens ? 0 : 1);
    EXPECT_EQ(d.retry_after, binds_tokens ? 200 * kMicrosPerSecond : kMinuteEnd - kNow);
  }
}

TEST(RetryAfter, SlidingWindowQuota) {
  const LimitRule sliding{100, kMinute, Algorithm::SlidingWindow};
  Fixture f;
  f.add_rule(LimitKind::Tokens, sliding);
  consume(sliding, &f.states[0], 100, kNow);
  // High needs 2 remaining: ceil(100 * (60 - e) / 60) <= 98 from e = 1.2 s
  // into the next minute.
  Decision d = f.run(alloc(1, Priority::High));
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.retry_after, kMinuteEnd + 1'200'000 - kNow);
  EXPECT_EQ(d.reset_at, kMinuteEnd + kMinute);
  const std::vector<CounterState> saved = f.states;
  EXPECT_FALSE(f.run(alloc(1, Priority::High), kNow + d.retry_after - 1).allowed());
  f.states = saved;
  EXPECT_EQ(f.run(alloc(1, Priority::High), kNow + d.retry_after).granted, 1);
}

TEST(Strategy, NoneForChecksAndWithoutTokenQuotas) {
  Fixture f;
  f.add(LimitKind::Requests, 10);
  EXPECT_EQ(f.run(alloc(5, Priority::High)).strategy, Strategy::None);
  Fixture g;
  g.add(LimitKind::Tokens, 1000);
  EXPECT_EQ(g.run(check()).strategy, Strategy::None);
  EXPECT_EQ(g.run(alloc(5, Priority::High)).strategy, Strategy::Priority);
  Fixture none;
  EXPECT_EQ(none.run(alloc(5, Priority::High)).strategy, Strategy::None);
}

// ================================================================ properties

namespace {

LimitRule random_decision_rule(std::mt19937_64& rng) {
  LimitRule r;
  r.algorithm = static_cast<Algorithm>(rng() % kAlgorithms);
  r.limit = rng() % 3 == 0 ? 7 : 1 + static_cast<int64_t>(rng() % 3000);
  r.window_micros = (1 + static_cast<int64_t>(rng() % 120)) * kMicrosPerSecond;
  if (r.algorithm == Algorithm::TokenBucket || r.algorithm == Algorithm::Gcra)
    r.burst = static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * r.limit + 1));
  return r;
}

struct Admission {
  int64_t t, n;
};

// The log of one counter respects a fixed window of `limit` (or, for the
// main counter, its algorithm's definition; see algorithm_test).
bool within_fixed(const LimitRule& rule, const std::vector<Admission>& log) {
  int64_t window = 0, sum = 0;
  for (std::size_t i = 0; i < log.size(); ++i) {
    const int64_t start = aligned_window_start(log[i].t, rule.window_micros);
    if (i == 0 || start != window) window = start, sum = 0;
    sum += log[i].n;
    if (sum > rule.limit) return false;
  }
  return true;
}

}  // namespace

// Over random limits of every algorithm, random strategies and random calls:
// a denied call charges nothing and says when to retry; an allowed call
// charges every limit exactly its units (main counter + emergency counter),
// never more than either counter has, and burst charges stay within the
// burst budget per burst window.
TEST(Property, StrategiesStayWithinTheirBudgets) {
  const uint64_t seed = 0xb0057ULL;
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 150; ++round) {
    SCOPED_TRACE(testing::Message() << "seed " << seed << " round " << round);
    Fixture f;
    const std::size_t nlimits = 1 + rng() % 5;
    for (std::size_t i = 0; i < nlimits; ++i) {
      AppliedLimit& l = f.add_rule(rng() % 3 == 0 ? LimitKind::Requests : LimitKind::Tokens,
                                   random_decision_rule(rng), static_cast<ScopeKind>(rng() % 3));
      l.burst_cap = rng() % 5 == 0;
      StrategyParams& p = l.params;
      p.dynamic = rng() % 2;
      p.history_weight_ppm = static_cast<uint32_t>(rng() % 1'000'001);
      p.load_weight_ppm = static_cast<uint32_t>(rng() % 1'000'001);
      p.time_weight_ppm = static_cast<uint32_t>(rng() % 1'000'001);
      p.emergency = rng() % 2;
      p.emergency_threshold_ppm = static_cast<uint32_t>(rng() % 1'000'001);
      p.override_ppm = static_cast<uint32_t>(rng() % 1'000'001);
      p.burst_mode = rng() % 2;
      p.burst_multiplier_ppm = static_cast<uint32_t>(1'000'000 + rng() % 4'000'001);
      p.burst_window_micros = (1 + static_cast<int64_t>(rng() % 30)) * kMicrosPerSecond;
      p.max_burst_tokens = static_cast<int64_t>(rng() % 500);
      if (rng() % 2) f.with_emergency(i);
      if (rng() % 2) f.with_burst(i);
    }
    std::vector<std::vector<Admission>> main_log(nlimits), emergency_log(nlimits),
        burst_log(nlimits);
    int64_t now = kNow;
    for (int step = 0; step < 400; ++step) {
      const int64_t window = f.limits[0].rule.window_micros;
      now += static_cast<int64_t>(rng() % 4 == 0 ? 0 : rng() % (window / 8 + 1));
      CallRequest r = rng() % 5 == 0 ? check()
                                     : alloc(1 + static_cast<int64_t>(rng() % 2000),
                                             static_cast<Priority>(rng() % 3), rng() % 4 == 0);
      r.burst_mode = rng() % 2;
      r.emergency = rng() % 3 == 0;
      Decision d = f.run(r, now);
      if (!d.allowed()) {
        ASSERT_EQ(d.granted, 0);
        if (d.outcome == Outcome::DeniedExceedsCapacity)
          ASSERT_EQ(d.retry_after, 0);
        else
          ASSERT_GE(d.retry_after, 1);
        for (std::size_t i = 0; i < nlimits; ++i) {
          const Charge& c = d.charges[i];
          ASSERT_EQ(c.units + c.emergency_units + c.burst_units, 0);
        }
        continue;
      }
      ASSERT_EQ(d.retry_after, 0);
      ASSERT_LE(d.granted, r.kind == CallKind::Allocate ? r.tokens : 0);
      ASSERT_LE(d.burst_tokens, d.granted);
      int64_t max_emergency = 0, max_burst = 0;
      for (std::size_t i = 0; i < nlimits; ++i) {
        const AppliedLimit& l = f.limits[i];
        const Charge& c = d.charges[i];
        const int64_t units = l.kind == LimitKind::Requests ? 1 : d.granted;
        ASSERT_EQ(c.units + c.emergency_units, units) << i;
        if (c.units > 0) main_log[i].push_back({now, c.units});
        if (c.emergency_units > 0) {
          ASSERT_TRUE(r.emergency && l.params.emergency && !l.burst_cap);
          emergency_log[i].push_back({now, c.emergency_units});
        }
        if (c.burst_units > 0) {
          ASSERT_TRUE(r.burst_mode && l.params.burst_mode && !l.burst_cap);
          burst_log[i].push_back({now, c.burst_units});
        }
        max_emergency = std::max(max_emergency, c.emergency_units);
        max_burst = std::max(max_burst, c.burst_units);
      }
      ASSERT_EQ(d.emergency_units, max_emergency);
      ASSERT_EQ(d.burst_tokens, max_burst);
      if (d.emergency_units > 0 && r.kind == CallKind::Allocate) {
        ASSERT_TRUE(d.strategy == Strategy::Emergency || d.strategy == Strategy::None);
      }
    }
    for (std::size_t i = 0; i < nlimits; ++i) {
      const AppliedLimit& l = f.limits[i];
      SCOPED_TRACE(testing::Message() << "limit " << i << " " << algorithm_name(l.rule.algorithm));
      // Main counters: replayed against a fresh model of the algorithm.
      CounterState model = advance(l.rule, CounterState{}, kNow);
      for (const Admission& a : main_log[i]) {
        ASSERT_LE(a.n, available(l.rule, model, a.t));
        consume(l.rule, &model, a.n, a.t);
      }
      ASSERT_TRUE(within_fixed(emergency_rule(l.rule, l.params), emergency_log[i]));
      ASSERT_TRUE(within_fixed(burst_budget_rule(l.params), burst_log[i]));
    }
  }
}

// Property: for limits of every algorithm that only refill (greedy high
// priority callers, no strategies), a denied call's retry_after is exact.
TEST(Property, RetryAfterIsExactForEveryAlgorithm) {
  const uint64_t seed = 31337;
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 400; ++round) {
    SCOPED_TRACE(testing::Message() << "seed " << seed << " round " << round);
    Fixture f;
    LimitRule requests = random_decision_rule(rng);
    requests.limit = 1 + static_cast<int64_t>(rng() % 3);
    if (requests.burst > 0) requests.burst = 1 + static_cast<int64_t>(rng() % 3);
    LimitRule tokens = random_decision_rule(rng);
    tokens.limit = 2 + static_cast<int64_t>(rng() % 40);
    // At least 2 tokens of capacity: below that no share under 1.0 ever grants one.
    if (capacity(tokens) < 2) tokens.burst = 2;
    f.add_rule(LimitKind::Requests, requests);
    f.add_rule(LimitKind::Tokens, tokens, ScopeKind::Endpoint);
    int64_t now = kNow + static_cast<int64_t>(rng() % 1'000'000'000);
    Decision d;
    for (int i = 0; i < 200; ++i) {
      d = f.run(alloc(1000, Priority::High), now);
      if (!d.allowed()) break;
    }
    ASSERT_FALSE(d.allowed());
    const int64_t retry = d.retry_after;
    ASSERT_GT(retry, 0);
    std::vector<CounterState> saved = f.states;
    Decision early = f.run(alloc(1, Priority::High), now + retry - 1);
    EXPECT_FALSE(early.allowed()) << algorithm_name(requests.algorithm) << " "
                                  << algorithm_name(tokens.algorithm);
    f.states = saved;
    Decision on_time = f.run(alloc(1, Priority::High), now + retry);
    EXPECT_TRUE(on_time.allowed())
        << algorithm_name(requests.algorithm) << " " << algorithm_name(tokens.algorithm);
  }
}

// Shadow mode: a shadow limit is evaluated and charged but never denies.
TEST(Shadow, ShadowOnlyDenialBecomesAnAllowWithTheWouldBeOutcome) {
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 100).shadow = true;  // exhausted
  Decision d = f.run(alloc(40, Priority::High));
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.granted, 40);  // granted as requested
  EXPECT_TRUE(d.shadowed);
  EXPECT_EQ(d.shadow_outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.retry_after, 0);
}

TEST(Shadow, ShadowLimitStillCountsUsage) {
  Fixture f;
  f.add(LimitKind::Requests, 3).shadow = true;
  for (int i = 0; i < 3; ++i) {
    Decision d = f.run(check());
    EXPECT_TRUE(d.allowed());
    EXPECT_FALSE(d.shadowed);
  }
  EXPECT_EQ(f.states[0].used, 3);
  Decision d = f.run(check());
  EXPECT_TRUE(d.allowed());
  EXPECT_TRUE(d.shadowed);
  EXPECT_EQ(d.shadow_outcome, Outcome::DeniedRequestLimit);
}

TEST(Shadow, ShadowQuotaDoesNotCapTheGrantButEnforcingOneDoes) {
  Fixture f;
  f.add(LimitKind::Tokens, 100, kHour, 0).shadow = true;          // high share: 50
  f.add(LimitKind::Tokens, 1000, kHour, 0, ScopeKind::Endpoint);  // high share: 500
  Decision d = f.run(alloc(300, Priority::High));
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.granted, 300);
  EXPECT_TRUE(d.shadowed);
  EXPECT_EQ(d.shadow_outcome,
            Outcome::PartialGrant);  // the shadow quota would have capped it at 50
  EXPECT_EQ(f.states[0].used, 100);  // charged what it had
  EXPECT_EQ(f.states[1].used, 300);
}

TEST(Shadow, EnforcingDenialIsReal) {
  Fixture f;
  f.add(LimitKind::Requests, 5, kHour, 5).shadow = true;
  f.add(LimitKind::Requests, 5, kHour, 5, ScopeKind::Endpoint);
  Decision d = f.run(check());
  EXPECT_FALSE(d.allowed());
  EXPECT_FALSE(d.shadowed);
  EXPECT_EQ(d.outcome, Outcome::DeniedRequestLimit);
  EXPECT_EQ(f.states[0].used, 5);
  EXPECT_EQ(f.states[1].used, 5);
}

TEST(Shadow, AllowedCallIsUnchangedByShadow) {
  Fixture a, b;
  a.add(LimitKind::Tokens, 100, kHour, 10);
  b.add(LimitKind::Tokens, 100, kHour, 10).shadow = true;
  Decision da = a.run(alloc(20, Priority::Medium));
  Decision db = b.run(alloc(20, Priority::Medium));
  EXPECT_EQ(da.outcome, db.outcome);
  EXPECT_EQ(da.granted, db.granted);
  EXPECT_FALSE(db.shadowed);
  EXPECT_EQ(a.states[0].used, b.states[0].used);
}

// decide_fail_open(): the grant of a call made without its counters.
TEST(FailOpen, CheckIsAllowedAndGrantsNothing) {
  const Decision d = decide_fail_open(check(), true, 0);
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.outcome, Outcome::NoLimit);
  EXPECT_EQ(d.granted, 0);
}

TEST(FailOpen, AllocationGetsWhatItReserved) {
  const Decision d = decide_fail_open(alloc(100, Priority::High), true, 40);
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.granted, 40);
}

TEST(FailOpen, NothingReservedIsATokenQuotaDenial) {
  const Decision d = decide_fail_open(alloc(100, Priority::Low), true, 0);
  EXPECT_FALSE(d.allowed());
  EXPECT_EQ(d.outcome, Outcome::DeniedTokenQuota);
  EXPECT_EQ(d.granted, 0);
}

TEST(FailOpen, WithoutTokenQuotaTheWholeRequestIsGranted) {
  const Decision d = decide_fail_open(alloc(100, Priority::Low), false, 0);
  EXPECT_TRUE(d.allowed());
  EXPECT_EQ(d.granted, 100);
}

TEST(FailOpen, AllOrNothingRefusesAPartialReservation) {
  CallRequest r = alloc(100, Priority::High);
  r.all_or_nothing = true;
  const Decision partial = decide_fail_open(r, true, 99);
  EXPECT_FALSE(partial.allowed());
  EXPECT_EQ(partial.granted, 0);
  const Decision whole = decide_fail_open(r, true, 100);
  EXPECT_TRUE(whole.allowed());
  EXPECT_EQ(whole.granted, 100);
}
