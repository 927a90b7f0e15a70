#include "rate_limiter/pg/rules/rules.hpp"

#include <algorithm>
#include <cmath>

#include "rate_limiter/pg/rules/calendar_rules.hpp"
#include "rate_limiter/pg/rules/concurrency_limits.hpp"
#include "rate_limiter/pg/rules/parent_links.hpp"
#include "rate_limiter/pg/rules/time_zones.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

int64 ppm_of(Datum d, int64 lo, int64 hi) {
  return std::clamp<int64>(std::llround(DatumGetFloat8(d) * core::kShareScale), lo, hi);
}

int8 switch_of(Datum d) { return DatumGetBool(d) ? 1 : 0; }

// 1-based attribute number of a column, 0 when the table has none.
int attnum_of(TupleDesc desc, const char* name) {
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute a = TupleDescAttr(desc, i);
    if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0) return i + 1;
  }
  return 0;
}

// The options stored in ppm (core::RuleRecord::ppm, in this order); the
// burst multiplier is a factor between 1 and 100.
constexpr RuleOption kPpmOptions[6] = {
    RuleOption::user_history_weight, RuleOption::system_load_weight,
    RuleOption::time_factor_weight,  RuleOption::emergency_threshold,
    RuleOption::override_percentage, RuleOption::burst_multiplier};
constexpr int kBurstMultiplierPpm = 5;

}  // namespace

int64 interval_to_micros(const Interval* interval) {
  // Same arithmetic as interval_cmp_value(); the inputs are bounded by the
  // callers' validation, and __int128 keeps absurd ones from overflowing.
  const __int128 total = static_cast<__int128>(interval->time) +
                         static_cast<__int128>(interval->day) * USECS_PER_DAY +
                         static_cast<__int128>(interval->month) * DAYS_PER_MONTH * USECS_PER_DAY;
  if (total > PG_INT64_MAX) return PG_INT64_MAX;
  if (total < PG_INT64_MIN) return PG_INT64_MIN;
  return static_cast<int64>(total);
}

core::LimitRule limit_rule_of(const core::RuleRecord& r, int64 at) noexcept {
  core::LimitRule rule;
  rule.limit = r.limit;
  rule.window_micros = r.window_micros;
  rule.algorithm = static_cast<core::Algorithm>(r.algorithm);
  rule.burst = r.burst;
  return is_calendar(r) ? calendar_rule(r, rule, at) : rule;
}

bool has_burst_cap(const core::RuleRecord& r) noexcept { return r.cap_limit > 0; }

core::LimitRule burst_cap_of(const core::RuleRecord& r) noexcept {
  core::LimitRule cap;
  cap.limit = r.cap_limit;
  cap.window_micros = std::clamp<int64>(static_cast<int64>(r.cap_window_s) * USECS_PER_SEC,
                                        core::kMinWindowMicros, core::kMaxWindowMicros);
  cap.algorithm = core::Algorithm::FixedWindow;
  return cap;
}

int64 replay_horizon(const core::RuleRecord& r) noexcept {
  if (is_hierarchy_record(r) || is_concurrency_record(r)) return 0;  // counts nothing
  auto horizon = [&](const core::LimitRule& rule) -> int64 {
    switch (rule.algorithm) {
      case core::Algorithm::FixedWindow:
        // A calendar period can be longer than its nominal window.
        return is_calendar(r) ? longest_period(r) : rule.window_micros;
      case core::Algorithm::SlidingWindow:
        return 2 * rule.window_micros;
      case core::Algorithm::TokenBucket:
      case core::Algorithm::Gcra: {
        // A bucket is full again capacity emission intervals after its last
        // charge: older rows cannot matter.
        const __int128 h =
            (static_cast<__int128>(core::capacity(rule)) * rule.window_micros + rule.limit - 1) /
            rule.limit;
        return h > PG_INT64_MAX / 2 ? PG_INT64_MAX / 2 : static_cast<int64>(h);
      }
    }
    return rule.window_micros;
  };
  // The nominal shape: the horizon of every period, not of one.
  core::LimitRule nominal;
  nominal.limit = r.limit;
  nominal.window_micros = r.window_micros;
  nominal.algorithm = static_cast<core::Algorithm>(r.algorithm);
  nominal.burst = r.burst;
  int64 h = horizon(nominal);
  if (has_burst_cap(r)) h = std::max(h, horizon(burst_cap_of(r)));
  return h;
}

core::StrategyParams resolve_params(const ScopeRules& scope, int kind) {
  const core::RuleRecord& own = scope.kind[kind];
  const int other_kind = 1 - kind;
  const core::RuleRecord* other = scope.has[other_kind] ? &scope.kind[other_kind] : nullptr;
  auto flag = [&](int8 core::RuleRecord::*field, bool setting) {
    if (own.*field >= 0) return own.*field == 1;
    if (other != nullptr && other->*field >= 0) return other->*field == 1;
    return setting;
  };
  auto ppm = [&](int i, double setting) {
    return own.ppm[i] >= 0 ? static_cast<uint32_t>(own.ppm[i]) : fraction_ppm(setting);
  };
  core::StrategyParams p;
  p.dynamic = flag(&core::RuleRecord::dynamic, settings.enable_dynamic_allocation);
  p.emergency = flag(&core::RuleRecord::emergency, settings.emergency_override_enabled);
  p.burst_mode = flag(&core::RuleRecord::burst_mode, settings.burst_mode_enabled);
  p.history_weight_ppm = ppm(0, settings.user_history_weight);
  p.load_weight_ppm = ppm(1, settings.system_load_weight);
  p.time_weight_ppm = ppm(2, settings.time_factor_weight);
  p.emergency_threshold_ppm = ppm(3, settings.emergency_threshold);
  p.override_ppm = ppm(4, settings.override_percentage);
  p.burst_multiplier_ppm = ppm(kBurstMultiplierPpm, settings.burst_multiplier);
  p.burst_window_micros = own.burst_window_micros >= 0
                              ? own.burst_window_micros
                              : static_cast<int64>(settings.burst_window_s) * USECS_PER_SEC;
  p.max_burst_tokens = own.max_burst_tokens >= 0 ? own.max_burst_tokens : settings.max_burst_tokens;
  return p;
}

bool is_shadow_limit(const ScopeRules& scope, int kind) {
  return settings.shadow_mode || scope.kind[kind].shadow == 1;
}

void RuleColumns::bind(TupleDesc desc, core::LimitKind kind) {
  desc_ = desc;
  kind_ = kind;
  const bool tokens = kind == core::LimitKind::Tokens;
  user_ = attnum_of(desc, "user_id");
  endpoint_ = attnum_of(desc, "api_endpoint");
  limit_ = attnum_of(desc, tokens ? "max_tokens_per_period" : "max_requests_per_window");
  window_ = attnum_of(desc, tokens ? "period_interval" : "window_duration");
  for (int i = 0; i < kRuleOptionCount; ++i) option_[i] = attnum_of(desc, kRuleOptionNames[i]);
  // Every column of the current schema (extension_catalog() checked the
  // version): one is missing only if it was dropped by hand.
  bool missing = user_ == 0 || endpoint_ == 0 || limit_ == 0 || window_ == 0;
  for (int i = 0; i < kRuleOptionCount; ++i) missing = missing || option_[i] == 0;
  if (missing)
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                    errmsg("rate_limiter rule table \"%s\" is missing a column",
                           tokens ? "token_limits" : "request_limits"),
                    errhint("Reinstall the extension: DROP EXTENSION rate_limiter; CREATE "
                            "EXTENSION rate_limiter;")));
}

void RuleColumns::ids(HeapTuple tuple, text** user, text** endpoint) const {
  bool isnull = false;
  Datum d = heap_getattr(tuple, user_, desc_, &isnull);
  *user = isnull ? nullptr : DatumGetTextPP(d);
  d = heap_getattr(tuple, endpoint_, desc_, &isnull);
  *endpoint = isnull ? nullptr : DatumGetTextPP(d);
}

// The tables' CHECK constraints keep every value in range; clamping only
// guards against constraints dropped by hand.
core::RuleRecord RuleColumns::record(HeapTuple tuple) const {
  core::RuleRecord r;
  bool isnull = false;
  auto get = [&](int attnum) -> Datum { return heap_getattr(tuple, attnum, desc_, &isnull); };
  r.kind = static_cast<uint8>(kind_);
  Datum d = get(limit_);
  r.limit = isnull ? 1 : std::clamp<int64>(DatumGetInt64(d), 1, core::kMaxQuantity);
  d = get(window_);
  r.window_micros = isnull ? core::kMinWindowMicros
                           : std::clamp<int64>(interval_to_micros(DatumGetIntervalP(d)),
                                               core::kMinWindowMicros, core::kMaxWindowMicros);
  if (!isnull) {
    // Kept apart for calendar periods (calendar_rules.hpp).
    const Interval* iv = DatumGetIntervalP(d);
    r.period_months = iv->month;
    r.period_days = iv->day;
  }
  core::Algorithm algorithm = core::Algorithm::FixedWindow;
  d = get(at(RuleOption::algorithm));
  if (!isnull) {
    text* t = DatumGetTextPP(d);
    if (!core::parse_algorithm(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &algorithm))
      algorithm = core::Algorithm::FixedWindow;
  }
  r.algorithm = static_cast<uint8>(algorithm);
  d = get(at(RuleOption::burst));
  r.burst = isnull ? 0 : std::clamp<int64>(DatumGetInt64(d), 0, core::kMaxQuantity - 1);
  d = get(at(RuleOption::burst_limit));
  const int64 cap_limit = isnull ? 0 : std::clamp<int64>(DatumGetInt64(d), 1, core::kMaxQuantity);
  d = get(at(RuleOption::burst_window_seconds));
  const bool cap_window_null = isnull;
  if (cap_limit > 0 && !cap_window_null) {
    r.cap_limit = cap_limit;
    r.cap_window_s = std::max<int32>(DatumGetInt32(d), 1);
  }
  d = get(at(RuleOption::enable_dynamic_allocation));
  r.dynamic = isnull ? -1 : switch_of(d);
  d = get(at(RuleOption::emergency_override_enabled));
  r.emergency = isnull ? -1 : switch_of(d);
  d = get(at(RuleOption::burst_mode_enabled));
  r.burst_mode = isnull ? -1 : switch_of(d);
  for (int i = 0; i < 6; ++i) {
    d = get(at(kPpmOptions[i]));
    const int64 hi = i == kBurstMultiplierPpm ? int64{100} * core::kShareScale : core::kShareScale;
    const int64 lo = i == kBurstMultiplierPpm ? core::kShareScale : 0;
    r.ppm[i] = isnull ? -1 : static_cast<int32>(ppm_of(d, lo, hi));
  }
  d = get(at(RuleOption::burst_window));
  r.burst_window_micros = isnull
                              ? -1
                              : std::clamp<int64>(interval_to_micros(DatumGetIntervalP(d)),
                                                  core::kMinWindowMicros, core::kMaxWindowMicros);
  d = get(at(RuleOption::max_burst_tokens));
  r.max_burst_tokens = isnull ? -1 : std::clamp<int64>(DatumGetInt64(d), 0, core::kMaxQuantity);
  d = get(at(RuleOption::shadow_mode));
  r.shadow = isnull ? -1 : switch_of(d);
  d = get(at(RuleOption::period_anchor));
  // set_* keeps anchors between 1900 and 2200; one written directly beyond
  // what the limiter's clock can hold is the default.
  if (!isnull && !TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(d)) &&
      DatumGetTimestampTz(d) < PG_INT64_MAX - kPostgresEpochUnixMicros)
    r.period_anchor = DatumGetTimestampTz(d) + kPostgresEpochUnixMicros;
  d = get(at(RuleOption::period_timezone));
  if (!isnull) {
    // Registered here (a trigger, the loader, a lookup: all may ereport),
    // so that the hot path only ever reads the registry.
    r.period_zone = time_zone_id(text_to_cstring(DatumGetTextPP(d)));
  }
  return r;
}

}  // namespace rate_limiter::pg
