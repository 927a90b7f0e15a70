#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "rate_limiter/core/decision.hpp"

using namespace rate_limiter::core;

namespace {

constexpr int64_t kHour = 3600 * kMicrosPerSecond;
constexpr int64_t kNow = 1'795'787'130'250'000;  // 2026-11-27 13:45:30.25 UTC

struct Fixture {
  std::vector<CounterState> states;
  std::vector<AppliedLimit> limits;

  AppliedLimit& add(LimitKind kind, int64_t limit, int64_t window = kHour, int64_t used = 0,
                    ScopeKind scope = ScopeKind::User) {
    states.reserve(8);
    states.push_back(CounterState{aligned_window_start(kNow, window), window, used});
    AppliedLimit l;
    l.kind = kind;
    l.scope = scope;
    l.rule = LimitRule{limit, window};
    limits.push_back(l);
    relink();
    return limits.back();
  }
  void relink() {
    for (std::size_t i = 0; i < limits.size(); ++i) limits[i].state = &states[i];
  }
  Decision run(const CallRequest& r, int64_t now = kNow, PriorityShares shares = {}) {
    return decide(r, limits.data(), limits.size(), shares, now);
  }
};

CallRequest alloc(int64_t tokens, Priority p, bool all_or_nothing = false) {
  CallRequest r;
  r.kind = CallKind::Allocate;
  r.tokens = tokens;
  r.priority = p;
  r.all_or_nothing = all_or_nothing;
  return r;
}

CallRequest check() {
  CallRequest r;
  r.kind = CallKind::Check;
  return r;
}

}  // namespace

TEST(PriorityShare, SeedSharesOfRemaining) {
  // 1000 remaining: high takes at most 500, medium 300, low 200.
  for (auto [p, expected] : {std::pair{Priority::High, 500}, {Priority::Medium, 300}, {Priority::Low, 200}}) {
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
  f.add(LimitKind::Tokens, 1000);
  Decision d = f.run(alloc(600, Priority::High, true));
  EXPECT_EQ(d.outcome, Outcome::DeniedAllOrNothing);
  EXPECT_EQ(d.granted, 0);
  EXPECT_EQ(f.states[0].used, 0);
  EXPECT_EQ(d.tokens_remaining, 1000);
  EXPECT_EQ(f.run(alloc(500, Priority::High, true)).granted, 500);
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
  f.add(LimitKind::Requests, 1000, kHour, 500);   // 499/1000 after the call
  f.add(LimitKind::Tokens, 100, kHour, 90);       // 10/100: tighter
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
  std::mt19937_64 rng(20261127);
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
      CallRequest r = rng() % 4 == 0 ? check() : alloc(1 + static_cast<int64_t>(rng() % 800),
                                                       static_cast<Priority>(rng() % 3), rng() % 2);
      Decision d = decide(r, limits, 2, PriorityShares{}, now);
      if (d.allowed()) {
        granted_tokens += d.granted;
        granted_requests += 1;
        EXPECT_LE(d.granted, r.tokens);
      } else {
        EXPECT_EQ(d.granted, 0);
        EXPECT_EQ(tokens.used, current_window(before_t, window, now).used);
        EXPECT_EQ(requests.used, current_window(before_r, window, now).used);
        EXPECT_GT(d.retry_after, 0);
        EXPECT_LE(d.retry_after, window);
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
  // With the seed shares, high stops at 1 remaining, medium at 3, low at 4:
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
  std::mt19937_64 rng(99);
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
