#include "rate_limiter/pg/settings.hpp"

#include <cmath>

#include "rate_limiter/pg/postgres.hpp"

namespace rate_limiter::pg {

Settings settings = {
    /* max_keys */ 100000,
    /* max_revocations */ 10000,
    /* failure_mode */ kFailClosed,
    /* lock_timeout_ms */ 1000,
    /* share_high */ 0.5,
    /* share_medium */ 0.3,
    /* share_low */ 0.2,
    /* debug_hold_lock_ms */ 0,
    /* debug_time_offset_s */ 0,
    /* debug_revocation_load_delay_ms */ 0,
};

namespace {

const struct config_enum_entry kFailureModes[] = {
    {"closed", kFailClosed, false},
    {"open", kFailOpen, false},
    {nullptr, 0, false},
};

}  // namespace

void define_settings() {
  DefineCustomIntVariable(
      "rate_limiter.max_keys", "Maximum number of live counters kept in shared memory.",
      "Each scope and kind of limit that a request touches uses one counter. "
      "Counters whose window has ended are evicted when space is needed.",
      &settings.max_keys, 100000, 16, 100000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.max_revocations",
      "Maximum number of revoked tokens cached in shared memory, over all databases.",
      "When the cache is full, tokens that do not fit are looked up in token_revocations "
      "(slower, still exact).",
      &settings.max_revocations, 10000, 1, 10000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);

  DefineCustomEnumVariable(
      "rate_limiter.failure_mode",
      "What a call does when the counter table is full or a lock wait times out.",
      "closed raises an error (RL507 or 55P03); open allows the call and counts it.",
      &settings.failure_mode, kFailClosed, kFailureModes, PGC_SUSET, 0, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.lock_timeout", "Longest wait for a rate limiter partition lock.",
      "A wait that runs out raises 55P03 (or is allowed when failure_mode is open). "
      "0 waits without bound.",
      &settings.lock_timeout_ms, 1000, 0, 600000, PGC_USERSET, GUC_UNIT_MS, nullptr, nullptr,
      nullptr);

  DefineCustomRealVariable(
      "rate_limiter.priority_share_high",
      "Largest share of the remaining token quota one high-priority request may take.", nullptr,
      &settings.share_high, 0.5, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable(
      "rate_limiter.priority_share_medium",
      "Largest share of the remaining token quota one medium-priority request may take.", nullptr,
      &settings.share_medium, 0.3, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable(
      "rate_limiter.priority_share_low",
      "Largest share of the remaining token quota one low-priority request may take.", nullptr,
      &settings.share_low, 0.2, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.debug_hold_lock_ms",
      "Testing only: keep the partition locks this long during each call.",
      "Used by the test suite to force lock waits and timeouts.", &settings.debug_hold_lock_ms, 0,
      0, 10000, PGC_SUSET, GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr,
      nullptr);
  DefineCustomIntVariable(
      "rate_limiter.debug_time_offset",
      "Testing only: shift the limiter's clock by this many seconds.",
      "Used by the test suite to cross window boundaries without sleeping.",
      &settings.debug_time_offset_s, 0, -2000000000, 2000000000, PGC_SUSET,
      GUC_UNIT_S | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.debug_revocation_load_delay_ms",
      "Testing only: pause this long between reading token_revocations and filling the "
      "revocation cache.",
      "Used by the test suite to commit revocations while a load is under way.",
      &settings.debug_revocation_load_delay_ms, 0, 0, 60000, PGC_SUSET,
      GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);

  MarkGUCPrefixReserved("rate_limiter");
}

core::PriorityShares current_priority_shares() {
  core::PriorityShares s;
  auto ppm = [](double share) {
    return static_cast<uint32_t>(std::llround(share * core::kShareScale));
  };
  s.ppm[static_cast<int>(core::Priority::High)] = ppm(settings.share_high);
  s.ppm[static_cast<int>(core::Priority::Medium)] = ppm(settings.share_medium);
  s.ppm[static_cast<int>(core::Priority::Low)] = ppm(settings.share_low);
  return s;
}

}  // namespace rate_limiter::pg
