#include "rate_limiter/pg/shmem/latency_histogram.hpp"

#include <cmath>

namespace rate_limiter::pg {
namespace {

// Upper bounds in ns, computed once per process (pure arithmetic, no
// allocation).  bounds[kLatencyBuckets-1] is "everything": UINT64_MAX.
struct Bounds {
  uint64 ns[kLatencyBuckets];
  Bounds() noexcept {
    const int steps = kLatencyBuckets - 2;
    const double ratio = std::log(static_cast<double>(kLatencyMaxNs) / kLatencyMinNs) / steps;
    for (int i = 0; i <= steps; ++i)
      ns[i] = static_cast<uint64>(std::llround(kLatencyMinNs * std::exp(ratio * i)));
    ns[steps] = kLatencyMaxNs;  // exact, whatever the rounding
    ns[kLatencyBuckets - 1] = UINT64_MAX;
  }
};

const Bounds& bounds() noexcept {
  static const Bounds b;
  return b;
}

int bucket_of(uint64 ns) noexcept {
  const uint64* b = bounds().ns;
  int lo = 0, hi = kLatencyBuckets - 1;  // the answer is in [lo, hi]
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (ns <= b[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

}  // namespace

void latency_init(LatencyStats* s) noexcept {
  for (pg_atomic_uint64& b : s->buckets) pg_atomic_write_u64(&b, 0);
  pg_atomic_write_u64(&s->ewma_fixed, 0);
}

void latency_record(LatencyStats* s, uint64 ns) noexcept {
  pg_atomic_fetch_add_u64(&s->buckets[bucket_of(ns)], 1);
  // Samples are capped at kLatencyMaxNs so the fixed-point value fits:
  // 10^10 << 16 < 2^50.
  const int64 sample = static_cast<int64>(std::min<uint64>(ns, kLatencyMaxNs)) << kLatencyEwmaShift;
  uint64 old = pg_atomic_read_u64(&s->ewma_fixed);
  for (;;) {
    const int64 cur = static_cast<int64>(old);
    const int64 next = cur == 0 ? sample : cur + (sample - cur) / kLatencyEwmaDivisor;
    // On failure `old` receives the current value and we retry with it.
    if (pg_atomic_compare_exchange_u64(&s->ewma_fixed, &old,
                                       static_cast<uint64>(next > 0 ? next : 1)))
      return;
  }
}

uint64 latency_percentile_ns(const LatencyStats* s, double p) noexcept {
  uint64 counts[kLatencyBuckets];
  uint64 total = 0;
  for (int i = 0; i < kLatencyBuckets; ++i) {
    // pg_atomic_read_u64 takes a non-const pointer; reading changes nothing.
    counts[i] = pg_atomic_read_u64(const_cast<pg_atomic_uint64*>(&s->buckets[i]));
    total += counts[i];
  }
  if (total == 0) return 0;
  uint64 target = static_cast<uint64>(std::ceil(p * static_cast<double>(total)));
  if (target < 1) target = 1;
  if (target > total) target = total;
  uint64 seen = 0;
  for (int i = 0; i < kLatencyBuckets; ++i) {
    seen += counts[i];
    if (seen >= target) return std::min(bounds().ns[i], kLatencyMaxNs);
  }
  return kLatencyMaxNs;
}

double latency_average_ns(const LatencyStats* s) noexcept {
  const uint64 v = pg_atomic_read_u64(const_cast<pg_atomic_uint64*>(&s->ewma_fixed));
  return static_cast<double>(v) / static_cast<double>(1ULL << kLatencyEwmaShift);
}

}  // namespace rate_limiter::pg
