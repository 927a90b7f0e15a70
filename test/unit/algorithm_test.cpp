#include "rate_limiter/core/algorithm.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "limit_model.hpp"

using namespace rate_limiter::core;
using rate_limiter::core::test::Admission;
using rate_limiter::core::test::FakeClock;
using rate_limiter::core::test::respects_definition;
using rate_limiter::core::test::sliding_span_bound;

namespace {

constexpr int64_t kSecond = kMicrosPerSecond;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
// 2026-11-27 13:45:30.25 UTC, microseconds since the Unix epoch.
constexpr int64_t kNow = 1'795'787'130'250'000;
// 2200-01-01 00:00 UTC.
constexpr int64_t kYear2200 = 7'258'118'400'000'000;

constexpr Algorithm kAll[] = {Algorithm::FixedWindow, Algorithm::SlidingWindow,
                              Algorithm::TokenBucket, Algorithm::Gcra};

// One limiter under a fake clock: the state as the counter table keeps it.
struct Limiter {
  LimitRule rule;
  FakeClock clock;
  CounterState state;

  Limiter(LimitRule r, int64_t now) : rule(r), clock{now} { state = advance(rule, state, now); }
  int64_t now() const { return clock.now; }
  void at(int64_t t) {
    clock.now = t;
    state = advance(rule, state, t);
  }
  void step(int64_t d) { at(clock.now + d); }
  int64_t available() const { return rate_limiter::core::available(rule, state, now()); }
  int64_t wait(int64_t n) const { return wait_for(rule, state, n, now()); }
  int64_t reset_after() const { return reset_at(rule, state, now()) - now(); }
  // Takes n if available; true when it did.
  bool take(int64_t n) {
    if (n > available()) return false;
    consume(rule, &state, n, now());
    return true;
  }
};

// CL.THROTTLE's reply for one call: allowed, limit, remaining, retry_after
// (-1 when allowed or never), reset_after.
struct Throttle {
  bool allowed;
  int64_t limit, remaining, retry_after, reset_after;
};
Throttle throttle(Limiter& l, int64_t n) {
  Throttle r;
  r.limit = capacity(l.rule);
  r.allowed = l.take(n);
  r.retry_after = r.allowed ? -1 : l.wait(n);
  r.remaining = l.available();
  r.reset_after = l.reset_after();
  return r;
}

}  // namespace

// ---------------------------------------------------------------- names

TEST(AlgorithmName, RoundTripsAndRejectsEverythingElse) {
  for (Algorithm a : kAll) {
    Algorithm parsed = Algorithm::FixedWindow;
    const char* name = algorithm_name(a);
    ASSERT_TRUE(parse_algorithm(name, std::strlen(name), &parsed)) << name;
    EXPECT_EQ(parsed, a);
  }
  EXPECT_STREQ(algorithm_name(Algorithm::SlidingWindow), "sliding_window");
  Algorithm out = Algorithm::Gcra;
  for (const char* bad : {"", "GCRA", "Fixed_window", "gcra ", " gcra", "token-bucket", "sliding"})
    EXPECT_FALSE(parse_algorithm(bad, std::strlen(bad), &out)) << bad;
  EXPECT_FALSE(parse_algorithm("gcra", 3, &out));  // a prefix is not a match
  EXPECT_FALSE(parse_algorithm("gcrab", 5, &out));
  EXPECT_FALSE(parse_algorithm(nullptr, 0, &out));
  EXPECT_EQ(out, Algorithm::Gcra);  // untouched on failure
}

TEST(Capacity, PerAlgorithm) {
  EXPECT_EQ(capacity(LimitRule{100, kMinute, Algorithm::FixedWindow, 7}), 100);
  EXPECT_EQ(capacity(LimitRule{100, kMinute, Algorithm::SlidingWindow, 7}), 100);
  EXPECT_EQ(capacity(LimitRule{100, kMinute, Algorithm::TokenBucket, 0}), 100);
  EXPECT_EQ(capacity(LimitRule{100, kMinute, Algorithm::TokenBucket, 7}), 7);
  EXPECT_EQ(capacity(LimitRule{100, kMinute, Algorithm::Gcra, 0}), 1);
  EXPECT_EQ(capacity(LimitRule{100, kMinute, Algorithm::Gcra, 15}), 16);
  // A bucket that would take more than 2^62 us to drain is capped.
  const LimitRule slow{1, kMaxWindowMicros, Algorithm::TokenBucket, kMaxQuantity};
  EXPECT_EQ(capacity(slow), (int64_t{1} << 62) / kMaxWindowMicros);
  EXPECT_EQ(capacity(LimitRule{kMaxQuantity, kSecond, Algorithm::Gcra, kMaxQuantity}),
            kMaxQuantity + 1);
}

// ---------------------------------------------------------------- fixed window

TEST(FixedWindow, CountsPerAlignedWindow) {
  const int64_t start = aligned_window_start(kNow, kMinute);
  Limiter l(LimitRule{10, kMinute}, kNow);
  EXPECT_EQ(l.state.window_start, start);
  EXPECT_TRUE(l.take(7));
  EXPECT_EQ(l.available(), 3);
  EXPECT_FALSE(l.take(4));
  EXPECT_EQ(l.wait(3), 0);
  EXPECT_EQ(l.wait(4), start + kMinute - kNow);
  EXPECT_EQ(l.wait(10), start + kMinute - kNow);
  EXPECT_EQ(l.wait(11), -1);
  EXPECT_EQ(reset_at(l.rule, l.state, kNow), start + kMinute);
  EXPECT_EQ(usage_ppm(l.rule, l.state, kNow), 700'000u);
  EXPECT_EQ(window_position_ppm(l.rule, l.state, kNow), 504'166u);  // 30.25 s of 60
  l.at(start + kMinute - 1);
  EXPECT_EQ(l.available(), 3);
  l.at(start + kMinute);
  EXPECT_EQ(l.available(), 10);
  EXPECT_EQ(window_position_ppm(l.rule, l.state, l.now()), 0u);
}

TEST(FixedWindow, RefundOnlyIntoTheWindowCharged) {
  Limiter l(LimitRule{10, kMinute}, kNow);
  const int64_t w = consume(l.rule, &l.state, 6, kNow);
  EXPECT_EQ(w, aligned_window_start(kNow, kMinute));
  refund(l.rule, &l.state, 2, w, kNow);
  EXPECT_EQ(l.available(), 6);
  refund(l.rule, &l.state, 100, w, kNow);  // never below zero
  EXPECT_EQ(l.state.used, 0);
  consume(l.rule, &l.state, 5, kNow);
  l.step(kMinute);
  refund(l.rule, &l.state, 5, w, l.now());  // that window is gone
  EXPECT_EQ(l.available(), 10);
  EXPECT_EQ(l.state.used, 0);
}

TEST(FixedWindow, HistoryIsAMovingAverageHalvingPerWindow) {
  Limiter l(LimitRule{100, kMinute}, kNow);
  ASSERT_TRUE(l.take(50));
  l.step(kMinute);  // (0 + 0.5) / 2
  EXPECT_EQ(l.state.history_ppm, 250'000u);
  ASSERT_TRUE(l.take(100));
  l.step(kMinute);  // (0.25 + 1) / 2
  EXPECT_EQ(l.state.history_ppm, 625'000u);
  ASSERT_TRUE(l.take(20));
  l.step(3 * kMinute);  // (0.625 + 0.2) / 2 = 0.4125, then two empty windows: / 4
  EXPECT_EQ(l.state.history_ppm, 103'125u);
  l.step(40 * kMinute);  // one roll of 40 windows: (0.103125 + 0) / 2 >> 39
  EXPECT_EQ(l.state.history_ppm, 0u);
}

TEST(FixedWindow, AnotherWindowOrAlgorithmRestartsTheState) {
  Limiter l(LimitRule{10, kMinute}, kNow);
  ASSERT_TRUE(l.take(9));
  l.state.history_ppm = 123;
  for (LimitRule other : {LimitRule{10, kHour}, LimitRule{10, kMinute, Algorithm::SlidingWindow}}) {
    CounterState s = advance(other, l.state, kNow);
    EXPECT_EQ(s.used, 0);
    EXPECT_EQ(s.history_ppm, 0u);
    EXPECT_EQ(s.limit, other.limit);
    EXPECT_EQ(s.window_micros, other.window_micros);
    EXPECT_EQ(s.algorithm, static_cast<uint8_t>(other.algorithm));
    EXPECT_EQ(available(other, l.state, kNow), other.limit);  // evaluated on advance()
  }
  // The burst of a window algorithm is ignored: same state.
  EXPECT_EQ(advance(LimitRule{10, kMinute, Algorithm::FixedWindow, 99}, l.state, kNow).used, 9);
}

TEST(FixedWindow, AnotherLimitKeepsTheCount) {
  // Raising or lowering a limit never hands out fresh quota.
  Limiter l(LimitRule{10, kMinute}, kNow);
  ASSERT_TRUE(l.take(9));
  l.state.history_ppm = 123;
  const LimitRule raised{11, kMinute};
  CounterState s = advance(raised, l.state, kNow);
  EXPECT_EQ(s.used, 9);
  EXPECT_EQ(s.limit, 11);
  EXPECT_EQ(s.history_ppm, 123u);
  EXPECT_EQ(available(raised, l.state, kNow), 2);
  EXPECT_EQ(available(LimitRule{5, kMinute}, l.state, kNow), 0);
}

TEST(TokenBucket, AnotherLimitKeepsTheDebtInUnits) {
  // 10 per minute, capacity 10: take 6, then the rule becomes 20 per minute
  // (capacity 20): the 6 units owed stay owed, 14 are available.
  const LimitRule before{10, kMinute, Algorithm::TokenBucket};
  Limiter l(before, kNow);
  ASSERT_TRUE(l.take(6));
  const LimitRule after{20, kMinute, Algorithm::TokenBucket};
  EXPECT_EQ(available(after, l.state, kNow), 14);
  // And lowered to 4 per minute (capacity 4): more owed than it holds.
  EXPECT_EQ(available(LimitRule{4, kMinute, Algorithm::TokenBucket}, l.state, kNow), 0);
}

// ---------------------------------------------------------------- sliding window

TEST(SlidingWindow, EstimateAtAKnownPosition) {
  const LimitRule rule{100, kMinute, Algorithm::SlidingWindow};
  const int64_t start = aligned_window_start(kNow, kMinute);
  Limiter l(rule, start + 59 * kSecond);
  ASSERT_TRUE(l.take(80));
  l.at(start + kMinute + 15 * kSecond);  // previous 80, 15 s into the window
  EXPECT_EQ(l.state.previous, 80);
  EXPECT_EQ(l.state.used, 0);
  ASSERT_TRUE(l.take(10));
  // estimate = 10 + ceil(80 * 45 / 60) = 70
  EXPECT_EQ(l.available(), 30);
  EXPECT_EQ(usage_ppm(rule, l.state, l.now()), 700'000u);
  EXPECT_EQ(window_position_ppm(rule, l.state, l.now()), 250'000u);
  // 50 more need 80 * (60 - e) / 60 <= 40: e >= 30 s, 15 s from now.
  EXPECT_EQ(l.wait(50), 15 * kSecond);
  Limiter early = l, on_time = l;
  early.step(15 * kSecond - 1);
  EXPECT_EQ(early.available(), 49);
  on_time.step(15 * kSecond);
  EXPECT_EQ(on_time.available(), 50);
  // At 45 s: 10 + ceil(80 * 15 / 60) = 30.
  l.step(30 * kSecond);
  EXPECT_EQ(l.available(), 70);
  // reset: the current window counted something, so two windows.
  EXPECT_EQ(reset_at(rule, l.state, l.now()), start + 3 * kMinute);
}

TEST(SlidingWindow, RollingOneWindowKeepsPreviousTwoForgetIt) {
  const LimitRule rule{100, kMinute, Algorithm::SlidingWindow};
  Limiter l(rule, kNow);
  ASSERT_TRUE(l.take(40));
  Limiter one = l, two = l;
  one.step(kMinute);
  EXPECT_EQ(one.state.previous, 40);
  two.step(2 * kMinute);
  EXPECT_EQ(two.state.previous, 0);
  EXPECT_EQ(two.available(), 100);
  // previous counts with weight (W - e) / W, rounded up.
  const int64_t start = one.state.window_start;
  one.at(start);
  EXPECT_EQ(one.available(), 60);
  one.at(start + kMinute - 1);
  EXPECT_EQ(one.available(), 99);                                    // ceil(40 * 1us / 60s) = 1
  EXPECT_EQ(reset_at(rule, one.state, one.now()), start + kMinute);  // nothing counted now
}

TEST(SlidingWindow, WaitMayNeedTheNextWindow) {
  const LimitRule rule{10, 10 * kSecond, Algorithm::SlidingWindow};
  const int64_t start = aligned_window_start(kNow, 10 * kSecond);
  Limiter l(rule, start + kSecond);
  ASSERT_TRUE(l.take(8));
  // 5 need used' = 0 and ceil(8 * (10 - e') / 10) <= 5: e' >= 3.75 s into the next window.
  EXPECT_EQ(l.wait(5), 9 * kSecond + 3'750'000);
  Limiter at = l;
  at.step(l.wait(5));
  EXPECT_EQ(at.available(), 5);
  at.step(-1);
  EXPECT_EQ(at.available(), 4);
  // The whole limit needs the window after the next one.
  EXPECT_EQ(l.wait(10), 19 * kSecond);
  EXPECT_EQ(l.wait(11), -1);
}

TEST(SlidingWindow, SpanBoundIsReached) {
  // limit at the last microsecond of a window after an empty one, then what
  // the estimate admits at elapsed W - 2: 2*limit - ceil(2*limit/W) in a span
  // of W microseconds.
  const LimitRule rule{10, kSecond, Algorithm::SlidingWindow};
  const int64_t start = aligned_window_start(kNow, kSecond);
  Limiter l(rule, start + kSecond - 1);
  ASSERT_TRUE(l.take(10));
  l.at(start + 2 * kSecond - 2);
  EXPECT_EQ(l.available(), 9);
  EXPECT_EQ(sliding_span_bound(rule), 19);
  std::vector<Admission> log{{start + kSecond - 1, 10}, {start + 2 * kSecond - 2, 9}};
  EXPECT_TRUE(respects_definition(rule, log));
  log.back().n = 10;
  EXPECT_FALSE(respects_definition(rule, log));
}

TEST(SlidingWindow, RefundReachesThePreviousWindow) {
  const LimitRule rule{100, kMinute, Algorithm::SlidingWindow};
  const int64_t start = aligned_window_start(kNow, kMinute);
  Limiter l(rule, start);
  const int64_t w = consume(rule, &l.state, 60, start);
  l.at(start + kMinute);
  EXPECT_EQ(l.available(), 40);
  refund(rule, &l.state, 30, w, l.now());
  EXPECT_EQ(l.state.previous, 30);
  EXPECT_EQ(l.available(), 70);
  l.at(start + 2 * kMinute);
  refund(rule, &l.state, 30, w, l.now());  // no longer counted anywhere
  EXPECT_EQ(l.state.previous, 0);
  EXPECT_EQ(l.available(), 100);
}

// ---------------------------------------------------------------- token bucket

TEST(TokenBucket, RefillsContinuously) {
  const LimitRule rule{100, kSecond, Algorithm::TokenBucket};  // T = 10 ms
  Limiter l(rule, kNow);
  EXPECT_EQ(l.available(), 100);
  ASSERT_TRUE(l.take(100));
  EXPECT_EQ(l.available(), 0);
  EXPECT_EQ(usage_ppm(rule, l.state, l.now()), 1'000'000u);
  EXPECT_EQ(l.reset_after(), kSecond);
  l.step(250'000);
  EXPECT_EQ(l.available(), 25);
  EXPECT_EQ(usage_ppm(rule, l.state, l.now()), 750'000u);
  EXPECT_EQ(window_position_ppm(rule, l.state, l.now()), 0u);
  EXPECT_EQ(l.wait(26), 10'000);
  EXPECT_EQ(l.wait(101), -1);
  l.step(10 * kSecond);
  EXPECT_EQ(l.available(), 100);  // never above capacity
  EXPECT_EQ(l.reset_after(), 0);
  EXPECT_TRUE(state_expired(l.state, l.now() + 1));
  EXPECT_FALSE(state_expired(l.state, l.now()));
}

TEST(TokenBucket, BurstIsTheCapacity) {
  const LimitRule rule{100, kSecond, Algorithm::TokenBucket, 30};
  Limiter l(rule, kNow);
  EXPECT_EQ(l.available(), 30);
  ASSERT_TRUE(l.take(30));
  l.step(kSecond);
  EXPECT_EQ(l.available(), 30);
  // A changed burst keeps the TAT (it is not part of the state's identity).
  ASSERT_TRUE(l.take(30));
  l.rule.burst = 50;
  EXPECT_EQ(l.available(), 20);
}

TEST(TokenBucket, NonIntegralEmissionIntervalLosesNothing) {
  // 7 per 10 s: T = 1,428,571.43 us.
  const LimitRule rule{7, 10 * kSecond, Algorithm::TokenBucket};
  Limiter l(rule, kNow);
  ASSERT_TRUE(l.take(7));
  EXPECT_EQ(l.wait(1), 1'428'572);
  EXPECT_EQ(l.wait(2), 2'857'143);
  EXPECT_EQ(l.wait(7), 10 * kSecond);
  // Taking one token at a time, as soon as it is there, for 70 s gives
  // exactly 49 tokens: no rounding drift.
  int64_t taken = 0;
  const int64_t end = kNow + 70 * kSecond;
  while (true) {
    const int64_t w = l.wait(1);
    if (l.now() + w > end) break;
    l.step(w);
    ASSERT_TRUE(l.take(1));
    ++taken;
  }
  EXPECT_EQ(taken, 49);
  // TAT = start + 10 s (the first 7) + 49 * 10/7 s, exactly.
  EXPECT_EQ(l.state.window_start * 7 + l.state.used, (kNow + 80 * kSecond) * 7);
}

TEST(TokenBucket, RefundMovesTheTatBackButNotBeforeNow) {
  const LimitRule rule{10, 10 * kSecond, Algorithm::TokenBucket};  // T = 1 s
  Limiter l(rule, kNow);
  ASSERT_TRUE(l.take(6));
  // A charge reports its end on the bucket's timeline: here, 6 s ahead.
  const int64_t end = consume(rule, &l.state, 0, kNow);
  EXPECT_EQ(end, kNow + 6 * kSecond);
  refund(rule, &l.state, 2, end, kNow);
  EXPECT_EQ(l.available(), 6);
  EXPECT_EQ(reset_at(rule, l.state, kNow), kNow + 4 * kSecond);
  refund(rule, &l.state, 100, end, kNow);
  EXPECT_EQ(l.state.window_start, kNow);
  EXPECT_EQ(l.available(), 10);
  // A state rebuilt for another rule is left alone, and so is an unknown end.
  const CounterState before = l.state;
  refund(LimitRule{11, 10 * kSecond, Algorithm::TokenBucket}, &l.state, 1, end, kNow);
  EXPECT_EQ(std::memcmp(&before, &l.state, sizeof before), 0);
}

// Settling a grant after the bucket refilled: what refill already paid
// back does not come back twice (100/hour bucket, 50 charged an hour ago,
// the refilled bucket drained again now: nothing of the old 50 returns).
TEST(TokenBucket, RefundGivesBackOnlyWhatRefillHasNotPaidBack) {
  const int64_t hour = 3600 * kSecond;
  const LimitRule rule{100, hour, Algorithm::TokenBucket};  // T = 36 s
  CounterState st = advance(rule, CounterState{}, kNow);
  const int64_t old_end = consume(rule, &st, 50, kNow);
  const int64_t later = kNow + hour;
  st = advance(rule, st, later);
  ASSERT_EQ(available(rule, st, later), 100);
  consume(rule, &st, 100, later);
  refund(rule, &st, 50, old_end, later);
  EXPECT_EQ(available(rule, st, later), 0);
  // Half-way through its refill, half of a charge is still owed.
  CounterState half = advance(rule, CounterState{}, kNow);
  const int64_t end = consume(rule, &half, 50, kNow);  // repaid by kNow + 30 min
  consume(rule, &half, 50, kNow);                      // the bucket is empty
  const int64_t t = kNow + 15 * 60 * kSecond;          // 25 tokens refilled
  ASSERT_EQ(available(rule, half, t), 25);
  refund(rule, &half, 50, end, t);
  EXPECT_EQ(available(rule, half, t), 50);  // 25 refilled + the 25 still owed of the first charge
}

// ---------------------------------------------------------------- GCRA

TEST(Gcra, RedisCellReadmeExample) {
  // CL.THROTTLE user123 15 30 60: max_burst 15, 30 per 60 s (T = 2 s).
  const LimitRule rule{30, 60 * kSecond, Algorithm::Gcra, 15};
  Limiter l(rule, kNow);
  Throttle r = throttle(l, 1);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.limit, 16);
  EXPECT_EQ(r.remaining, 15);
  EXPECT_EQ(r.retry_after, -1);
  EXPECT_EQ(r.reset_after, 2 * kSecond);
  for (int i = 2; i <= 16; ++i) {
    r = throttle(l, 1);
    EXPECT_TRUE(r.allowed) << i;
    EXPECT_EQ(r.remaining, 16 - i);
    EXPECT_EQ(r.reset_after, 2 * i * kSecond);
  }
  r = throttle(l, 1);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.remaining, 0);
  EXPECT_EQ(r.retry_after, 2 * kSecond);
  EXPECT_EQ(r.reset_after, 32 * kSecond);
  l.step(2 * kSecond);
  EXPECT_TRUE(throttle(l, 1).allowed);
}

TEST(Gcra, RedisCellTestTable) {
  // redis-cell's it_rate_limits: max_burst 4, 1 per second (limit 5).
  // (offset ms, quantity, allowed, remaining, reset_after ms, retry_after ms)
  struct Case {
    int64_t at_ms, n;
    bool allowed;
    int64_t remaining, reset_ms, retry_ms;
  };
  const Case cases[] = {
      {0, 6, false, 5, 0, -1},  // never larger than the maximum
      {0, 1, true, 4, 1000, -1},    {0, 1, true, 3, 2000, -1},
      {0, 1, true, 2, 3000, -1},    {0, 1, true, 1, 4000, -1},
      {0, 1, true, 0, 5000, -1},    {0, 1, false, 0, 5000, 1000},
      {3000, 1, true, 2, 3000, -1}, {3100, 1, true, 1, 3900, -1},
      {4000, 1, true, 1, 4000, -1}, {8000, 1, true, 4, 1000, -1},
      {9500, 1, true, 4, 1000, -1}, {9500, 0, true, 4, 1000, -1},  // a peek
      {9500, 2, true, 2, 3000, -1}, {9500, 5, false, 2, 3000, 3000},
  };
  const LimitRule rule{1, kSecond, Algorithm::Gcra, 4};
  Limiter l(rule, kNow);
  int i = 0;
  for (const Case& c : cases) {
    l.at(kNow + c.at_ms * 1000);
    const Throttle r = throttle(l, c.n);
    EXPECT_EQ(r.allowed, c.allowed) << "case " << i;
    EXPECT_EQ(r.limit, 5);
    EXPECT_EQ(r.remaining, c.remaining) << "case " << i;
    EXPECT_EQ(r.reset_after, c.reset_ms * 1000) << "case " << i;
    EXPECT_EQ(r.retry_after, c.retry_ms < 0 ? -1 : c.retry_ms * 1000) << "case " << i;
    ++i;
  }
}

TEST(Gcra, RetryAfterRoundsUpToAWholeMicrosecond) {
  // 3 per second: T = 333,333.33 us; max_burst 0 (capacity 1).
  const LimitRule rule{3, kSecond, Algorithm::Gcra};
  Limiter l(rule, kNow);
  ASSERT_TRUE(l.take(1));
  EXPECT_EQ(l.wait(1), 333'334);
  EXPECT_EQ(l.reset_after(), 333'334);
  EXPECT_EQ(l.wait(2), -1);
  Limiter early = l;
  early.step(333'333);
  EXPECT_EQ(early.available(), 0);
  l.step(333'334);
  EXPECT_EQ(l.available(), 1);
}

// ---------------------------------------------------------------- state lifecycle

TEST(State, ExpiryPerAlgorithm) {
  EXPECT_TRUE(state_expired(CounterState{}, kNow));
  EXPECT_EQ(expiry_of(CounterState{}), std::numeric_limits<int64_t>::min());
  const int64_t start = aligned_window_start(kNow, kMinute);
  Limiter fixed(LimitRule{10, kMinute}, kNow);
  EXPECT_EQ(expiry_of(fixed.state), start + kMinute);
  Limiter sliding(LimitRule{10, kMinute, Algorithm::SlidingWindow}, kNow);
  EXPECT_EQ(expiry_of(sliding.state), start + 2 * kMinute);
  Limiter bucket(LimitRule{10, kMinute, Algorithm::TokenBucket}, kNow);
  ASSERT_TRUE(bucket.take(1));  // TAT = now + 6 s
  EXPECT_EQ(expiry_of(bucket.state), kNow + 6 * kSecond + 1);
  EXPECT_FALSE(state_expired(bucket.state, kNow + 6 * kSecond));
  EXPECT_TRUE(state_expired(bucket.state, kNow + 6 * kSecond + 1));
  for (Algorithm a : kAll) {
    // Advanced at now: never expired at now; and expired exactly from expiry_of().
    Limiter l(LimitRule{7, 10 * kSecond, a, 3}, kNow);
    EXPECT_FALSE(state_expired(l.state, kNow)) << algorithm_name(a);
    EXPECT_FALSE(state_expired(l.state, expiry_of(l.state) - 1));
    EXPECT_TRUE(state_expired(l.state, expiry_of(l.state)));
  }
}

TEST(State, ClockSteppingBackNeverReturnsQuota) {
  for (Algorithm a : kAll) {
    Limiter l(LimitRule{10, kMinute, a}, kNow);
    const int64_t cap = capacity(l.rule);
    ASSERT_TRUE(l.take(cap));
    const int64_t left = l.available();
    for (int64_t back : {int64_t{1}, kSecond, kMinute, 10 * kHour}) {
      EXPECT_LE(available(l.rule, l.state, kNow - back), left) << algorithm_name(a);
      const CounterState s = advance(l.rule, l.state, kNow - back);
      EXPECT_EQ(std::memcmp(&s, &l.state, sizeof s), 0) << algorithm_name(a);
      const int64_t w = wait_for(l.rule, s, 1, kNow - back);
      EXPECT_GT(w, 0);
      EXPECT_GE(available(l.rule, s, kNow - back + w), 1);
    }
  }
}

TEST(State, BucketsKeepNoHistoryAndNoPosition) {
  for (Algorithm a : {Algorithm::TokenBucket, Algorithm::Gcra}) {
    Limiter l(LimitRule{10, kMinute, a, 9}, kNow);
    ASSERT_TRUE(l.take(capacity(l.rule)));
    l.step(5 * kMinute);
    EXPECT_EQ(l.state.history_ppm, 0u);
    EXPECT_EQ(window_position_ppm(l.rule, l.state, l.now()), 0u);
  }
}

// ---------------------------------------------------------------- properties

namespace {

LimitRule random_rule(std::mt19937_64& rng, Algorithm a) {
  LimitRule r;
  r.algorithm = a;
  static constexpr int64_t kWindows[] = {kSecond, 10 * kSecond, kMinute, kHour, 24 * kHour};
  r.window_micros = rng() % 4 == 0 ? kSecond + static_cast<int64_t>(rng() % (100'000 * kSecond))
                                   : kWindows[rng() % 5];
  switch (rng() % 6) {
    case 0:
      r.limit = 7;  // with 10 s windows: T = 10/7 s
      r.window_micros = 10 * kSecond;
      break;
    case 1:
      r.limit = 1 + static_cast<int64_t>(rng() % 5);
      break;
    case 2:
      r.limit = 1 + static_cast<int64_t>(rng() % 1000);
      break;
    case 3:
      r.limit = kMaxQuantity - static_cast<int64_t>(rng() % 1000);
      break;
    case 4:
      r.limit = 1 + static_cast<int64_t>(rng() % kMaxQuantity);
      break;
    default:
      r.limit = 1 + static_cast<int64_t>(rng() % 100'000);
      break;
  }
  if (a == Algorithm::TokenBucket || a == Algorithm::Gcra) {
    switch (rng() % 4) {
      case 0:
        r.burst = 0;
        break;
      case 1:
        r.burst = 1 + static_cast<int64_t>(rng() % 10);
        break;
      default:
        r.burst = static_cast<int64_t>(
            rng() % static_cast<uint64_t>(std::min(kMaxQuantity, 2 * r.limit) + 1));
        break;
    }
  }
  return r;
}

int64_t random_step(std::mt19937_64& rng, int64_t window) {
  switch (rng() % 8) {
    case 0:
    case 1:
      return 0;
    case 2:
      return static_cast<int64_t>(rng() % 1000);  // sub-millisecond
    case 3:
      return static_cast<int64_t>(rng() % (window / 100 + 1));
    case 4:
    case 5:
      return static_cast<int64_t>(rng() % (window / 10 + 1));
    case 6:
      return static_cast<int64_t>(rng() % window);
    default:
      return static_cast<int64_t>(rng() % (3 * window));  // multi-window jumps
  }
}

int64_t random_units(std::mt19937_64& rng, int64_t cap) {
  switch (rng() % 6) {
    case 0:
      return 1;
    case 1:
      return cap + 1 + static_cast<int64_t>(rng() % 3);  // never fits
    case 2:
      return cap;
    case 3:
      return 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(std::min<int64_t>(cap, 10)));
    default:
      return 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(cap));
  }
}

// (b): wait_for() is exact for a denied request of n.
::testing::AssertionResult wait_is_exact(const LimitRule& rule, const CounterState& state,
                                         int64_t n, int64_t now) {
  const int64_t w = wait_for(rule, state, n, now);
  if (n > capacity(rule)) {
    if (w == -1) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "n > capacity but wait " << w;
  }
  if (w <= 0) return ::testing::AssertionFailure() << "denied but wait " << w;
  const CounterState copy = state;  // the state itself is not touched
  if (available(rule, copy, now + w) < n)
    return ::testing::AssertionFailure() << "not admitted at now + " << w;
  if (available(rule, copy, now + w - 1) >= n)
    return ::testing::AssertionFailure() << "admitted already at now + " << w << " - 1";
  if (w > 1000 && available(rule, copy, now + w - 1000) >= n)
    return ::testing::AssertionFailure() << "admitted already at now + " << w << " - 1000";
  return ::testing::AssertionSuccess();
}

}  // namespace

// For every algorithm and random rules: (a) the admissions respect the
// definition, (b) retry waits are exact, (c) available()/consume()/refund()
// agree.
TEST(Property, AlgorithmsKeepTheirDefinition) {
  const uint64_t seed = 0x5eed'2026'1127ULL;
  std::mt19937_64 rng(seed);
  for (Algorithm a : kAll) {
    for (int round = 0; round < 60; ++round) {
      const LimitRule rule = random_rule(rng, a);
      SCOPED_TRACE(testing::Message()
                   << "seed " << seed << " " << algorithm_name(a) << " round " << round << " limit "
                   << rule.limit << " window " << rule.window_micros << " burst " << rule.burst);
      const int64_t cap = capacity(rule);
      Limiter l(rule, kNow + static_cast<int64_t>(rng() % (1000 * kHour)));
      std::vector<Admission> log;
      for (int step = 0; step < 1000; ++step) {
        l.step(random_step(rng, rule.window_micros));
        const int64_t n = random_units(rng, cap);
        const int64_t avail = l.available();
        ASSERT_GE(avail, 0);
        ASSERT_LE(avail, cap);
        if (step % 7 == 0) {
          // (c) consuming everything available leaves nothing; refunding it
          // restores it.
          Limiter copy = l;
          if (avail > 0) {
            const int64_t w = consume(rule, &copy.state, avail, copy.now());
            ASSERT_EQ(copy.available(), 0);
            ASSERT_GT(copy.wait(1), 0);
            refund(rule, &copy.state, avail, w, copy.now());
            ASSERT_EQ(copy.available(), avail);
          } else {
            ASSERT_GT(copy.wait(1), 0);
          }
        }
        if (n <= avail) {
          const uint32_t before = usage_ppm(rule, l.state, l.now());
          ASSERT_EQ(l.wait(n), 0);
          ASSERT_TRUE(l.take(n));
          ASSERT_EQ(l.available(), avail - n);
          ASSERT_GE(usage_ppm(rule, l.state, l.now()), before);
          log.push_back({l.now(), n});
        } else {
          ASSERT_TRUE(wait_is_exact(rule, l.state, n, l.now())) << "n " << n << " avail " << avail;
          ASSERT_FALSE(l.take(n));
        }
        ASSERT_LE(usage_ppm(rule, l.state, l.now()), 1'000'000u);
        ASSERT_LT(window_position_ppm(rule, l.state, l.now()), 1'000'000u);
        ASSERT_GE(reset_at(rule, l.state, l.now()), l.now());
        ASSERT_FALSE(state_expired(l.state, l.now()));
      }
      ASSERT_TRUE(respects_definition(rule, log));
    }
  }
}

// Greedy callers (take everything, as soon as it is there) push every
// algorithm to its bound; the definition still holds.
TEST(Property, GreedyCallersStayWithinTheDefinition) {
  const uint64_t seed = 424242;
  std::mt19937_64 rng(seed);
  for (Algorithm a : kAll) {
    for (int round = 0; round < 40; ++round) {
      const LimitRule rule = random_rule(rng, a);
      SCOPED_TRACE(testing::Message()
                   << "seed " << seed << " " << algorithm_name(a) << " round " << round << " limit "
                   << rule.limit << " window " << rule.window_micros << " burst " << rule.burst);
      Limiter l(rule, kNow);
      std::vector<Admission> log;
      for (int step = 0; step < 500; ++step) {
        const int64_t n = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(capacity(rule)));
        const int64_t w = l.wait(n);
        ASSERT_GE(w, 0);
        l.step(w);
        ASSERT_TRUE(l.take(n));
        log.push_back({l.now(), n});
        if (rng() % 4 == 0) l.step(random_step(rng, rule.window_micros));
      }
      ASSERT_TRUE(respects_definition(rule, log));
    }
  }
}

// Extreme inputs, and states built for another rule (advanced first): every
// result stays in range, and nothing traps.
TEST(Property, ExtremeInputsStayInRange) {
  const uint64_t seed = 0xdeadbeefULL;
  std::mt19937_64 rng(seed);
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  const int64_t limits[] = {1, 2, 7, kMaxQuantity - 1, kMaxQuantity};
  const int64_t windows[] = {kMinWindowMicros, kMinWindowMicros + 1, 7 * kMicrosPerDay,
                             kMaxWindowMicros - 1, kMaxWindowMicros};
  const int64_t bursts[] = {0, 1, kMaxQuantity - 1, kMaxQuantity};
  auto pick_rule = [&]() {
    LimitRule r;
    r.algorithm = kAll[rng() % 4];
    r.limit = rng() % 3 == 0 ? 1 + static_cast<int64_t>(rng() % kMaxQuantity) : limits[rng() % 5];
    r.window_micros =
        rng() % 3 == 0
            ? kMinWindowMicros + static_cast<int64_t>(rng() % (kMaxWindowMicros - kMinWindowMicros))
            : windows[rng() % 5];
    r.burst = rng() % 3 == 0 ? static_cast<int64_t>(rng() % kMaxQuantity) : bursts[rng() % 4];
    return r;
  };
  auto pick_now = [&]() {
    switch (rng() % 4) {
      case 0:
        return int64_t{0};
      case 1:
        return kYear2200;
      default:
        return static_cast<int64_t>(rng() % static_cast<uint64_t>(kYear2200));
    }
  };
  for (int i = 0; i < 20'000; ++i) {
    const LimitRule a = pick_rule(), b = pick_rule();
    int64_t now = pick_now();
    CounterState s = advance(a, CounterState{}, now);
    consume(a, &s, capacity(a) / (1 + static_cast<int64_t>(rng() % 3)), now);
    // The same rule later or earlier, or another rule.
    const LimitRule& rule = rng() % 2 == 0 ? a : b;
    now = pick_now();
    s = advance(rule, s, now);
    const int64_t cap = capacity(rule);
    ASSERT_GE(cap, 1);
    const int64_t avail = available(rule, s, now);
    ASSERT_GE(avail, 0) << i;
    ASSERT_LE(avail, cap) << i;
    ASSERT_LE(usage_ppm(rule, s, now), 1'000'000u);
    ASSERT_LT(window_position_ppm(rule, s, now), 1'000'000u);
    for (int64_t n : {int64_t{1}, avail, avail + 1, cap, cap + 1, kMaxQuantity}) {
      const int64_t w = wait_for(rule, s, n, now);
      if (n > cap) {
        ASSERT_EQ(w, -1) << i;
      } else {
        ASSERT_GE(w, 0) << i;
      }
      if (n <= avail) {
        ASSERT_EQ(w, 0) << i;
      }
    }
    const int64_t take = avail / (1 + static_cast<int64_t>(rng() % 4));
    const int64_t window = consume(rule, &s, take, now);
    ASSERT_EQ(available(rule, s, now), avail - take) << i;
    ASSERT_GE(reset_at(rule, s, now), now);
    refund(rule, &s, take, window, now);
    ASSERT_EQ(available(rule, s, now), avail) << i;
    // Beyond available(), consume() clamps.
    consume(rule, &s, std::numeric_limits<int64_t>::max(), now);
    ASSERT_EQ(available(rule, s, now), 0)
        << i << " " << algorithm_name(rule.algorithm) << " limit " << rule.limit << " window "
        << rule.window_micros << " burst " << rule.burst << " now " << now;
    ASSERT_FALSE(state_expired(s, now));
  }
}

// Lowering a bucket's limit and raising it again hands out nothing extra:
// the debt is kept beyond the lower capacity (10/10 s bucket drained,
// lowered to 5, a denied call, raised to 10: still empty).
TEST(TokenBucket, LoweringAndRaisingTheLimitKeepsTheDebt) {
  const LimitRule ten{10, 10 * kSecond, Algorithm::TokenBucket};
  const LimitRule five{5, 10 * kSecond, Algorithm::TokenBucket};
  CounterState st = advance(ten, CounterState{}, kNow);
  consume(ten, &st, 10, kNow);
  st = advance(five, st, kNow);
  EXPECT_EQ(available(five, st, kNow), 0);
  st = advance(ten, st, kNow);
  EXPECT_EQ(available(ten, st, kNow), 0);
}

TEST(ChargeUnclamped, KeepsEveryUnitARebuildReplays) {
  const LimitRule fixed_rule{100, 3600 * kSecond, Algorithm::FixedWindow};
  CounterState st;
  charge_unclamped(fixed_rule, &st, 300, kNow);  // granted under a limit of 400, lowered since
  EXPECT_EQ(available(fixed_rule, st, kNow), 0);
  const LimitRule raised{400, 3600 * kSecond, Algorithm::FixedWindow};
  EXPECT_EQ(available(raised, advance(raised, st, kNow), kNow), 100);
  const LimitRule bucket{10, 10 * kSecond, Algorithm::TokenBucket};
  CounterState b;
  charge_unclamped(bucket, &b, 15, kNow);
  EXPECT_EQ(available(bucket, b, kNow), 0);
  EXPECT_EQ(available(bucket, b, kNow + 5 * kSecond), 0);  // 5 s repay 5 of the 15
  EXPECT_EQ(available(bucket, b, kNow + 10 * kSecond), 5);
}
