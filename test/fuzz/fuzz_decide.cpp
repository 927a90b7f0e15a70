// decide() and the algorithm functions over random rules, counter states
// (built by advance/consume/refund), strategy parameters and requests.
//
// Checked (documented in decision.hpp / algorithm.hpp):
//  - available() stays in 0 .. capacity(); consume(n) lowers it by exactly n;
//    a refund gives back at most what it names;
//  - wait_for(n) is exact: n available at now + w, not at now + w - 1;
//    -1 exactly when n > capacity;
//  - an allowed allocation grants 1 .. requested tokens (Granted: all), a
//    check grants 0; allowed calls have retry_after 0;
//  - a denied call grants 0, charges nothing, and leaves every main counter
//    exactly at advance(rule, state, now) (strategy counters there or
//    untouched);
//  - its retry: DeniedExceedsCapacity has retry_after 0 and the same call
//    is still refused later (1 us, a window, far on); any other denial has
//    retry_after >= 1; the search finds it whenever no dynamic share is
//    involved, and when it finds it the same call is allowed at now +
//    retry_after; without dynamic allocation (whose retry may pass earlier
//    while the endpoint load falls) it is refused at now + retry_after - 1;
//  - per limit: units charged to the counter <= its available() before the
//    call, emergency units <= the emergency counter's available(), burst
//    units <= the burst budget's available(); units + emergency units ==
//    the grant (tokens) or 1 (requests); afterwards available() == before -
//    units (no counter ever exceeds its capacity);
//  - an enforcing (non-shadow) token quota without emergency counter never
//    lets the grant exceed its available() before the call.
#include <algorithm>
#include <cstring>

#include "fuzz_common.hpp"
#include "rate_limiter/core/decision.hpp"

namespace {

using namespace rate_limiter::core;
using fuzz::quantity;

bool same(const CounterState& a, const CounterState& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// decide() at t on copies of every counter: whether the call passes then.
bool allowed_at(const CallRequest& req, const AppliedLimit* limits, std::size_t n,
                const PriorityShares& shares, int64_t t) {
  AppliedLimit copy[kMaxAppliedLimits];
  CounterState main[kMaxAppliedLimits], emerg[kMaxAppliedLimits], burst[kMaxAppliedLimits];
  for (std::size_t i = 0; i < n; ++i) {
    copy[i] = limits[i];
    if (limits[i].state) main[i] = *limits[i].state, copy[i].state = &main[i];
    if (limits[i].emergency_state)
      emerg[i] = *limits[i].emergency_state, copy[i].emergency_state = &emerg[i];
    if (limits[i].burst_state) burst[i] = *limits[i].burst_state, copy[i].burst_state = &burst[i];
  }
  return decide(req, copy, n, shares, t).allowed();
}

// Whether any token quota's share moves with the clock for this call.
bool dynamic_share(const CallRequest& req, const AppliedLimit* limits, std::size_t n) {
  if (req.kind != CallKind::Allocate) return false;
  for (std::size_t i = 0; i < n; ++i)
    if (limits[i].state && limits[i].kind == LimitKind::Tokens && limits[i].params.dynamic &&
        !limits[i].burst_cap)
      return true;
  return false;
}

void check_retry(const CallRequest& req, const AppliedLimit* limits, std::size_t n,
                 const PriorityShares& shares, const Decision& d, int64_t now) {
  constexpr int64_t kFar = int64_t{1} << 61;  // probe only where time arithmetic is roomy
  if (d.outcome == Outcome::DeniedExceedsCapacity) {
    FUZZ_CHECK(d.retry_after == 0);
    int64_t longest = 0;
    for (std::size_t i = 0; i < n; ++i)
      longest =
          std::max({longest, limits[i].rule.window_micros, limits[i].params.burst_window_micros});
    for (const int64_t later : {int64_t{1}, longest, 3 * longest + 1})
      if (later < kFar - now) FUZZ_CHECK(!allowed_at(req, limits, n, shares, now + later));
    return;
  }
  FUZZ_CHECK(d.retry_after >= 1);
  const bool dynamic = dynamic_share(req, limits, n);
  FUZZ_CHECK(d.retry_found || dynamic);
  if (!d.retry_found || d.retry_after >= kFar - now) return;
  FUZZ_CHECK(allowed_at(req, limits, n, shares, now + d.retry_after));
  if (!dynamic) FUZZ_CHECK(!allowed_at(req, limits, n, shares, now + d.retry_after - 1));
}

void check_wait_for(const LimitRule& r, const CounterState& s, int64_t n, int64_t now) {
  const int64_t w = wait_for(r, s, n, now);
  if (n > capacity(r)) {
    FUZZ_CHECK(w == -1);
    return;
  }
  FUZZ_CHECK(w >= 0);
  FUZZ_CHECK(available(r, s, now + w) >= n);
  if (w > 0) FUZZ_CHECK(available(r, s, now + w - 1) < n);
  const int64_t reset = reset_at(r, s, now);
  FUZZ_CHECK(available(r, s, std::max(now, reset)) == capacity(r) || reset < now);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // Up to ~1000 years after the window origin: far inside the documented
  // 2^62 us headroom.
  const int64_t now = kWindowOriginMicros + in.ConsumeIntegralInRange<int64_t>(0, int64_t{1} << 55);

  CallRequest req;
  req.kind = in.ConsumeBool() ? CallKind::Allocate : CallKind::Check;
  req.tokens = quantity(in, 1, kMaxQuantity);
  req.priority = static_cast<Priority>(in.ConsumeIntegralInRange<int>(0, kPriorities - 1));
  req.all_or_nothing = in.ConsumeBool();
  req.burst_mode = in.ConsumeBool();
  req.emergency = in.ConsumeBool();

  PriorityShares shares;
  if (in.ConsumeBool())
    for (uint32_t& s : shares.ppm) s = in.ConsumeIntegralInRange<uint32_t>(0, kShareScale);

  const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, kMaxAppliedLimits);
  AppliedLimit limits[kMaxAppliedLimits];
  CounterState main[kMaxAppliedLimits], emerg[kMaxAppliedLimits], burst[kMaxAppliedLimits];
  CounterState main0[kMaxAppliedLimits], emerg0[kMaxAppliedLimits], burst0[kMaxAppliedLimits];
  int64_t rem0[kMaxAppliedLimits] = {}, erem0[kMaxAppliedLimits] = {},
          brem0[kMaxAppliedLimits] = {};
  for (std::size_t i = 0; i < n; ++i) {
    AppliedLimit& l = limits[i];
    l.kind = in.ConsumeBool() ? LimitKind::Tokens : LimitKind::Requests;
    l.scope = static_cast<ScopeKind>(in.ConsumeIntegralInRange<int>(0, 3));
    l.burst_cap = in.ConsumeIntegralInRange<int>(0, 3) == 0;
    l.rule = fuzz::rule(in);
    l.shadow = in.ConsumeIntegralInRange<int>(0, 3) == 0;
    StrategyParams& p = l.params;
    p.dynamic = in.ConsumeBool();
    p.history_weight_ppm = in.ConsumeIntegralInRange<uint32_t>(0, kShareScale);
    p.load_weight_ppm = in.ConsumeIntegralInRange<uint32_t>(0, kShareScale);
    p.time_weight_ppm = in.ConsumeIntegralInRange<uint32_t>(0, kShareScale);
    p.emergency = in.ConsumeBool();
    p.emergency_threshold_ppm = in.ConsumeIntegralInRange<uint32_t>(0, kShareScale);
    p.override_ppm = in.ConsumeIntegralInRange<uint32_t>(0, kShareScale);
    p.burst_mode = in.ConsumeBool();
    p.burst_multiplier_ppm = in.ConsumeIntegralInRange<uint32_t>(kShareScale, 100 * kShareScale);
    p.burst_window_micros = in.ConsumeIntegralInRange<int64_t>(kMinWindowMicros, kMaxWindowMicros);
    p.max_burst_tokens = quantity(in, 0, kMaxQuantity);

    const int presence = in.ConsumeIntegralInRange<int>(0, 7);
    if (presence != 0) {
      main[i] = fuzz::history(in, l.rule, now);
      main0[i] = main[i];
      l.state = &main[i];
      rem0[i] = available(l.rule, main[i], now);
      FUZZ_CHECK(rem0[i] >= 0 && rem0[i] <= capacity(l.rule));
      check_wait_for(l.rule, advance(l.rule, main[i], now), quantity(in, 1, kMaxQuantity), now);
    }
    const LimitRule er = emergency_rule(l.rule, p);
    if ((presence & 2) && er.limit > 0) {
      emerg[i] = fuzz::history(in, er, now);
      emerg0[i] = emerg[i];
      l.emergency_state = &emerg[i];
      erem0[i] = available(er, emerg[i], now);
    }
    const LimitRule br = burst_budget_rule(p);
    if ((presence & 4) && br.limit > 0) {
      burst[i] = fuzz::history(in, br, now);
      burst0[i] = burst[i];
      l.burst_state = &burst[i];
      brem0[i] = available(br, burst[i], now);
    }
  }

  const Decision d = decide(req, limits, n, shares, now);

  const bool alloc = req.kind == CallKind::Allocate;
  if (!d.allowed()) {
    FUZZ_CHECK(d.granted == 0);
    check_retry(req, limits, n, shares, d, now);
    for (std::size_t i = 0; i < n; ++i) {
      const Charge& c = d.charges[i];
      FUZZ_CHECK(c.units == 0 && c.emergency_units == 0 && c.burst_units == 0);
      const AppliedLimit& l = limits[i];
      if (l.state) FUZZ_CHECK(same(main[i], advance(l.rule, main0[i], now)));
      // Strategy counters are advanced only when the call uses the strategy.
      if (l.emergency_state)
        FUZZ_CHECK(same(emerg[i], emerg0[i]) ||
                   same(emerg[i], advance(emergency_rule(l.rule, l.params), emerg0[i], now)));
      if (l.burst_state)
        FUZZ_CHECK(same(burst[i], burst0[i]) ||
                   same(burst[i], advance(burst_budget_rule(l.params), burst0[i], now)));
    }
    return 0;
  }

  FUZZ_CHECK(d.retry_after == 0);
  if (!alloc) FUZZ_CHECK(d.granted == 0);
  if (alloc) {
    FUZZ_CHECK(d.granted >= 0 && d.granted <= req.tokens);
    if (d.outcome == Outcome::Granted || d.outcome == Outcome::NoLimit)
      FUZZ_CHECK(d.granted == req.tokens);
    if (d.outcome == Outcome::PartialGrant) FUZZ_CHECK(d.granted >= 1 && d.granted < req.tokens);
    if (req.all_or_nothing) FUZZ_CHECK(d.granted == req.tokens);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const AppliedLimit& l = limits[i];
    const Charge& c = d.charges[i];
    if (!l.state) {
      FUZZ_CHECK(c.units == 0 && c.emergency_units == 0 && c.burst_units == 0);
      continue;
    }
    const bool tokens = l.kind == LimitKind::Tokens;
    FUZZ_CHECK(c.units >= 0 && c.units <= rem0[i]);
    FUZZ_CHECK(c.emergency_units >= 0 && c.emergency_units <= erem0[i]);
    FUZZ_CHECK(c.burst_units >= 0 && c.burst_units <= brem0[i]);
    FUZZ_CHECK(available(l.rule, main[i], now) == rem0[i] - c.units);
    if (!l.shadow) {
      const int64_t units = tokens ? (alloc ? d.granted : 0) : 1;
      FUZZ_CHECK(c.units + c.emergency_units == units);
      if (tokens && alloc && !l.emergency_state) FUZZ_CHECK(d.granted <= rem0[i]);
    } else {
      // Charged what fits (main counter, then the emergency allowance on the
      // emergency path); never the burst budget.
      FUZZ_CHECK(c.units + c.emergency_units <= (tokens ? (alloc ? d.granted : 0) : 1));
      FUZZ_CHECK(c.burst_units == 0);
    }
    if (l.emergency_state) {
      const LimitRule er = emergency_rule(l.rule, l.params);
      FUZZ_CHECK(available(er, emerg[i], now) == erem0[i] - c.emergency_units);
    }
    if (l.burst_state) {
      const LimitRule br = burst_budget_rule(l.params);
      FUZZ_CHECK(available(br, burst[i], now) == brem0[i] - c.burst_units);
    }
  }
  return 0;
}
