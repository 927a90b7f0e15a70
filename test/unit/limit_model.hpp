// Test helpers: a fake clock and checkers that a log of admissions respects
// the definition of an algorithm (not its implementation).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "rate_limiter/core/algorithm.hpp"

namespace rate_limiter::core::test {

// The only clock of the unit tests: advanced explicitly, never slept on.
struct FakeClock {
  int64_t now;
  int64_t step(int64_t micros) { return now += micros; }
};

struct Admission {
  int64_t t;  // when
  int64_t n;  // units admitted
};

// The most a sliding window admits in any span of W microseconds (see the
// proof in src/core/algorithm.cpp): 2*limit - ceil(2*limit / W).
inline int64_t sliding_span_bound(const LimitRule& rule) {
  const __int128 l = rule.limit;
  return static_cast<int64_t>(2 * l - (2 * l + rule.window_micros - 1) / rule.window_micros);
}

// Checks a time-ordered log against the definition of rule's algorithm:
//  fixed_window    sum per aligned window <= limit
//  sliding_window  sum per aligned window <= limit, and sum over any
//                  [t, t + W) <= sliding_span_bound()
//  token_bucket /  sum over any [t1, t2] <= C + (t2 - t1) * limit / W
//  gcra            (C = capacity(); exact rational: the sum is an integer)
inline ::testing::AssertionResult respects_definition(const LimitRule& rule,
                                                      const std::vector<Admission>& log) {
  using i128 = __int128;
  const int64_t w = rule.window_micros;
  switch (rule.algorithm) {
    case Algorithm::FixedWindow:
    case Algorithm::SlidingWindow: {
      i128 sum = 0;
      int64_t window = 0;
      for (std::size_t i = 0; i < log.size(); ++i) {
        const int64_t start = aligned_window_start(log[i].t, w);
        if (i == 0 || start != window) {
          window = start;
          sum = 0;
        }
        sum += log[i].n;
        if (sum > rule.limit)
          return ::testing::AssertionFailure()
                 << "window at " << window << " admitted " << static_cast<int64_t>(sum)
                 << " > limit " << rule.limit;
      }
      if (rule.algorithm == Algorithm::FixedWindow) break;
      const int64_t bound = sliding_span_bound(rule);
      i128 span = 0;
      for (std::size_t i = 0, j = 0; i < log.size(); ++i) {
        // span = sum of log[i..j) with log[j-1].t < log[i].t + W
        if (j < i) {
          j = i;
          span = 0;
        }
        while (j < log.size() && log[j].t < log[i].t + w) span += log[j++].n;
        if (span > bound)
          return ::testing::AssertionFailure()
                 << "span from " << log[i].t << " admitted " << static_cast<int64_t>(span)
                 << " > bound " << bound;
        span -= log[i].n;
      }
      break;
    }
    case Algorithm::TokenBucket:
    case Algorithm::Gcra: {
      // sum(i..j) * W <= C * W + (t_j - t_i) * L  for all i <= j, i.e.
      // (P_j W - t_j L) - (P_{i-1} W - t_i L) <= C W with prefix sums P.
      const i128 c = capacity(rule);
      i128 prefix = 0;
      i128 min_b = 0;
      for (std::size_t j = 0; j < log.size(); ++j) {
        const i128 b = prefix * w - static_cast<i128>(log[j].t) * rule.limit;
        if (j == 0 || b < min_b) min_b = b;
        prefix += log[j].n;
        const i128 a = prefix * w - static_cast<i128>(log[j].t) * rule.limit;
        if (a - min_b > c * w)
          return ::testing::AssertionFailure()
                 << "bucket admitted more than C + elapsed * rate up to t=" << log[j].t;
      }
      break;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace rate_limiter::core::test
