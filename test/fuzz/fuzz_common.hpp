// Helpers shared by the libFuzzer targets (make fuzz).  Invariant violations
// call FUZZ_CHECK, which traps: libFuzzer reports the crash and saves the
// input.  Arithmetic overflow and out-of-bounds accesses are caught by
// -fsanitize=address,undefined.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/types.hpp"

#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      __builtin_trap();                                                                   \
    }                                                                                     \
  } while (0)

namespace fuzz {

using namespace rate_limiter::core;

// Small values most of the time (where the interesting edges are), the
// whole documented range otherwise.
inline int64_t quantity(FuzzedDataProvider& in, int64_t lo, int64_t hi) {
  if (in.ConsumeBool())
    return in.ConsumeIntegralInRange<int64_t>(lo, std::min<int64_t>(hi, lo + 20));
  return in.ConsumeIntegralInRange<int64_t>(lo, hi);
}

inline LimitRule rule(FuzzedDataProvider& in) {
  LimitRule r;
  r.limit = quantity(in, 1, kMaxQuantity);
  r.window_micros = in.ConsumeBool()
                        ? kMinWindowMicros * in.ConsumeIntegralInRange<int64_t>(1, 120)
                        : in.ConsumeIntegralInRange<int64_t>(kMinWindowMicros, kMaxWindowMicros);
  r.algorithm = static_cast<Algorithm>(in.ConsumeIntegralInRange<int>(0, kAlgorithms - 1));
  r.burst = in.ConsumeBool() ? 0 : quantity(in, 0, kMaxQuantity - 1);
  return r;
}

// A state for `rule` built the only way states are built: advance() and
// consume() (and refund()) at non-decreasing instants up to `now`.
inline CounterState history(FuzzedDataProvider& in, const LimitRule& r, int64_t now) {
  CounterState s;
  const int steps = in.ConsumeIntegralInRange<int>(0, 6);
  int64_t t = now - in.ConsumeIntegralInRange<int64_t>(0, 3 * r.window_micros);
  for (int i = 0; i < steps; ++i) {
    t = std::min(now, t + in.ConsumeIntegralInRange<int64_t>(0, r.window_micros));
    s = advance(r, s, t);
    const int64_t avail = available(r, s, t);
    FUZZ_CHECK(avail >= 0 && avail <= capacity(r));
    const int64_t n = quantity(in, 0, avail);
    const int64_t w = consume(r, &s, n, t);
    FUZZ_CHECK(available(r, s, t) == avail - n);
    if (in.ConsumeBool()) {
      const int64_t back = in.ConsumeIntegralInRange<int64_t>(0, n);
      refund(r, &s, back, w, t);
      const int64_t after = available(r, s, t);
      FUZZ_CHECK(after >= avail - n && after <= avail - n + back);
    }
  }
  return s;
}

}  // namespace fuzz
