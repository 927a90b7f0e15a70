// Decision latency: a lock-free log-scale histogram and a moving average,
// both in shared memory (SharedMetrics).
//
// Histogram: kLatencyBuckets pg_atomic_uint64 counts.  Bucket 0 counts
// calls of at most kLatencyMinNs; bucket i (1 .. kLatencyBuckets-2) counts
// calls in (bound(i-1), bound(i)] with bound(i) = kLatencyMinNs * r^i and
// r = (kLatencyMaxNs / kLatencyMinNs)^(1 / (kLatencyBuckets-2)), so
// bound(kLatencyBuckets-2) = kLatencyMaxNs; the last bucket counts
// everything slower.  With 64 buckets over 100 ns .. 10 s, r = 10^(8/62)
// ~ 1.35: a percentile is the upper bound of the bucket where the
// cumulative count reaches it, so it overstates the true value by at most
// 35% (never understates it, except above 10 s, reported as 10 s).
//
// Recording is one fetch-add on one bucket: no lock, no loop.  A reader sums
// the buckets without a lock; calls recorded while it reads may or may not
// be counted, but its total is the sum of what it read, so its percentiles
// are consistent with themselves.
//
// Moving average: an exponentially weighted mean of the call time with
// weight 1/kLatencyEwmaDivisor per call (the weight of a call halves after
// ~44 later calls), kept in fixed point (nanoseconds * 2^kLatencyEwmaShift)
// in one pg_atomic_uint64 and updated with a compare-and-swap loop.  Unlike
// the mean since startup, it follows changes in load within a few hundred
// calls.  The first call after startup or a reset sets it directly.
#pragma once

#include <cstdint>

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

constexpr int kLatencyBuckets = 64;
constexpr uint64 kLatencyMinNs = 100;                // upper bound of bucket 0
constexpr uint64 kLatencyMaxNs = 10'000'000'000ULL;  // upper bound of bucket 62
constexpr int kLatencyEwmaShift = 16;                // fixed-point fraction bits
constexpr int64 kLatencyEwmaDivisor = 64;            // weight of one call: 1/64

struct LatencyStats {
  pg_atomic_uint64 buckets[kLatencyBuckets];
  pg_atomic_uint64 ewma_fixed;  // ns << kLatencyEwmaShift; 0: no call yet
};

void latency_init(LatencyStats* s) noexcept;  // zero everything (also the reset)
void latency_record(LatencyStats* s, uint64 ns) noexcept;

// The p-quantile (0 < p <= 1) in nanoseconds: the upper bound of the first
// bucket whose cumulative count reaches ceil(p * total); 0 with no call.
uint64 latency_percentile_ns(const LatencyStats* s, double p) noexcept;

// The moving average in nanoseconds (0 before the first call).
double latency_average_ns(const LatencyStats* s) noexcept;

}  // namespace rate_limiter::pg
