#include "rate_limiter/pg/rule_cache.hpp"

#include <boost/container/flat_map.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string_view>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/extension_catalog.hpp"
#include "rate_limiter/pg/settings.hpp"
#include "rate_limiter/pg/shared_state.hpp"

namespace rate_limiter::pg {
namespace {

using RuleMap = boost::container::flat_map<core::Hash128, ScopeRules>;

// One row of the rule tables, already hashed: the plain-data handoff between
// the SQL side (which can ereport) and the C++ side (which can throw).
struct RuleRow {
  core::Hash128 scope;
  core::LimitKind kind;
  KindRule rule;
};

constexpr int kRuleColumns = 21;

// Owned through a raw pointer on purpose: a static object with a destructor
// would run at process exit, after PostgreSQL's own shutdown code.
RuleMap* rules = nullptr;
uint64 loaded_generation = 0;  // 0: not loaded / invalidated
uint64 loaded_installation = 0;
core::Hash128 default_scope;
// Bumped by every invalidation.  A load during which it moved (the relation
// locks taken by the load process invalidation messages) is not trusted.
uint64 invalidations = 0;

// Builds the new map before swapping it in, so a bad_alloc leaves the old
// (invalidated) cache untouched.  Throws; runs no PostgreSQL code.
void rebuild(const RuleRow* rows, std::size_t n) {
  std::unique_ptr<RuleMap> fresh(new RuleMap());
  fresh->reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    ScopeRules& entry = (*fresh)[rows[i].scope];
    const int k = static_cast<int>(rows[i].kind);
    entry.has[k] = true;
    entry.kind[k] = rows[i].rule;
  }
  delete rules;
  rules = fresh.release();
}

core::ScopeKind scope_kind_of(bool has_user, bool has_endpoint) {
  if (has_user) return has_endpoint ? core::ScopeKind::UserEndpoint : core::ScopeKind::User;
  return has_endpoint ? core::ScopeKind::Endpoint : core::ScopeKind::Default;
}

std::string_view text_view(Datum d) {
  text* t = DatumGetTextPP(d);
  return std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

int64 ppm_or_null(Datum d, bool isnull, int64 lo, int64 hi) {
  if (isnull) return -1;
  return std::clamp<int64>(std::llround(DatumGetFloat8(d) * core::kShareScale), lo, hi);
}

int8 switch_or_null(Datum d, bool isnull) { return isnull ? -1 : (DatumGetBool(d) ? 1 : 0); }

// Columns: 0 kind, 1 user_id, 2 api_endpoint, 3 limit, 4 window, then the
// option columns in kOptionColumns order.  The tables' CHECK constraints
// keep every value in range; clamping only guards against constraints
// dropped by hand.
KindRule kind_rule_of(const Datum* v, const bool* isnull) {
  KindRule r;
  r.rule.limit = std::clamp<int64>(DatumGetInt64(v[3]), 1, core::kMaxQuantity);
  r.rule.window_micros = std::clamp<int64>(interval_to_micros(DatumGetIntervalP(v[4])),
                                           core::kMinWindowMicros, core::kMaxWindowMicros);
  core::Algorithm algorithm = core::Algorithm::FixedWindow;
  if (!isnull[5]) {
    std::string_view name = text_view(v[5]);
    if (!core::parse_algorithm(name.data(), name.size(), &algorithm))
      algorithm = core::Algorithm::FixedWindow;
  }
  r.rule.algorithm = algorithm;
  r.rule.burst = isnull[6] ? 0 : std::clamp<int64>(DatumGetInt64(v[6]), 0, core::kMaxQuantity - 1);
  if (!isnull[7] && !isnull[8]) {
    r.has_burst_cap = true;
    r.burst_cap.limit = std::clamp<int64>(DatumGetInt64(v[7]), 1, core::kMaxQuantity);
    r.burst_cap.window_micros = std::clamp<int64>(
        static_cast<int64>(DatumGetInt32(v[8])) * USECS_PER_SEC, core::kMinWindowMicros,
        core::kMaxWindowMicros);
    r.burst_cap.algorithm = core::Algorithm::FixedWindow;
  }
  RuleOptions& o = r.options;
  o.dynamic = switch_or_null(v[9], isnull[9]);
  o.emergency = switch_or_null(v[10], isnull[10]);
  o.burst_mode = switch_or_null(v[11], isnull[11]);
  o.history_weight_ppm = ppm_or_null(v[12], isnull[12], 0, core::kShareScale);
  o.load_weight_ppm = ppm_or_null(v[13], isnull[13], 0, core::kShareScale);
  o.time_weight_ppm = ppm_or_null(v[14], isnull[14], 0, core::kShareScale);
  o.emergency_threshold_ppm = ppm_or_null(v[15], isnull[15], 0, core::kShareScale);
  o.override_ppm = ppm_or_null(v[16], isnull[16], 0, core::kShareScale);
  o.burst_multiplier_ppm = ppm_or_null(v[17], isnull[17], core::kShareScale, int64{100} * core::kShareScale);
  if (!isnull[18])
    o.burst_window_micros = std::clamp<int64>(interval_to_micros(DatumGetIntervalP(v[18])),
                                              core::kMinWindowMicros, core::kMaxWindowMicros);
  if (!isnull[19]) o.max_burst_tokens = std::clamp<int64>(DatumGetInt64(v[19]), 0, core::kMaxQuantity);
  o.shadow = switch_or_null(v[20], isnull[20]);
  return r;
}

// Reads both rule tables with the latest snapshot (not the transaction's:
// a REPEATABLE READ transaction must still see rules committed after it
// began).  Returns a palloc'd array in the caller's memory context.
RuleRow* load_rule_rows(std::size_t* nrows, uint64* installation) {
  const ExtensionCatalog* ext = extension_catalog();
  *installation = ext->installation;
  // Both tables have the same option columns (see the 1.0--1.1 script).
  static const char kOptionColumns[] =
      "algorithm, burst, burst_limit, burst_window_seconds, enable_dynamic_allocation, "
      "emergency_override_enabled, burst_mode_enabled, user_history_weight, system_load_weight, "
      "time_factor_weight, emergency_threshold, override_percentage, burst_multiplier, "
      "burst_window, max_burst_tokens, %s";
  // A database still at extension version 1.0 (library updated, ALTER
  // EXTENSION ... UPDATE not run yet) has none of them: its limits keep
  // working with the defaults until it is updated.
  static const char kOptionDefaults[] =
      "'fixed_window'::text, NULL::bigint, NULL::bigint, NULL::integer, NULL::boolean, "
      "NULL::boolean, NULL::boolean, NULL::float8, NULL::float8, NULL::float8, NULL::float8, "
      "NULL::float8, NULL::float8, NULL::interval, NULL::bigint, %s";
  const bool has_options = get_attnum(ext->token_limits, "algorithm") != InvalidAttrNumber &&
                           get_attnum(ext->request_limits, "algorithm") != InvalidAttrNumber;
  // shadow_mode came later in 1.1 than the other option columns.
  const bool has_shadow = get_attnum(ext->token_limits, "shadow_mode") != InvalidAttrNumber &&
                          get_attnum(ext->request_limits, "shadow_mode") != InvalidAttrNumber;
  char options[1024];
  snprintf(options, sizeof options, has_options ? kOptionColumns : kOptionDefaults,
           has_shadow ? "shadow_mode" : "NULL::boolean");
  char sql[4096];
  snprintf(sql, sizeof sql,
           "SELECT 0, user_id, api_endpoint, max_tokens_per_period, period_interval, %s "
           "FROM %s.token_limits "
           "UNION ALL "
           "SELECT 1, user_id, api_endpoint, max_requests_per_window, window_duration, %s "
           "FROM %s.request_limits",
           options, ext->quoted_schema, options, ext->quoted_schema);

  MemoryContext caller = CurrentMemoryContext;
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the rule query");
  int rc = SPI_execute_snapshot(plan, nullptr, nullptr, GetLatestSnapshot(), InvalidSnapshot,
                                true, false, 0);
  if (rc != SPI_OK_SELECT) elog(ERROR, "rate_limiter: rule query failed: %s", SPI_result_code_string(rc));

  const std::size_t n = SPI_processed;
  auto* rows = static_cast<RuleRow*>(
      MemoryContextAllocHuge(caller, std::max<std::size_t>(n, 1) * sizeof(RuleRow)));
  const core::SipKey key = shared->hash_key;
  for (std::size_t i = 0; i < n; ++i) {
    HeapTuple tuple = SPI_tuptable->vals[i];
    TupleDesc desc = SPI_tuptable->tupdesc;
    bool isnull[kRuleColumns];
    Datum v[kRuleColumns];
    for (int c = 0; c < kRuleColumns; ++c) v[c] = SPI_getbinval(tuple, desc, c + 1, &isnull[c]);
    const bool has_user = !isnull[1];
    const bool has_endpoint = !isnull[2];
    std::string_view user = has_user ? text_view(v[1]) : std::string_view();
    std::string_view endpoint = has_endpoint ? text_view(v[2]) : std::string_view();
    rows[i].scope = core::scope_hash(key, ext->installation, scope_kind_of(has_user, has_endpoint),
                                     user, endpoint);
    rows[i].kind = DatumGetInt32(v[0]) == 0 ? core::LimitKind::Tokens : core::LimitKind::Requests;
    rows[i].rule = kind_rule_of(v, isnull);
  }
  SPI_finish();
  owner.restore();
  *nrows = n;
  return rows;
}

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

void ensure_rules_current() {
  const uint64 generation = pg_atomic_read_u64(&shared->rules_generation);
  if (rules != nullptr && loaded_generation == generation) return;
  // Read the generation before the snapshot is taken: a commit counted in
  // `generation` is then visible to the snapshot.
  pg_memory_barrier();
  const uint64 invalidations_before = invalidations;
  std::size_t n = 0;
  uint64 installation = 0;
  RuleRow* rows = load_rule_rows(&n, &installation);
  rebuild(rows, n);  // may throw; the boundary guard turns that into ERROR
  pfree(rows);
  loaded_installation = installation;
  default_scope = core::scope_hash(shared->hash_key, installation, core::ScopeKind::Default, {}, {});
  // Use what was loaded for this call, but load again next time if the
  // extension's catalog entry or the rules were invalidated meanwhile.
  loaded_generation = invalidations == invalidations_before ? generation : 0;
}

core::StrategyParams resolve_params(const ScopeRules& scope, int kind) {
  const RuleOptions& own = scope.kind[kind].options;
  const int other_kind = 1 - kind;
  const RuleOptions* other = scope.has[other_kind] ? &scope.kind[other_kind].options : nullptr;
  auto flag = [&](int8 RuleOptions::*field, bool setting) {
    if (own.*field >= 0) return own.*field == 1;
    if (other != nullptr && other->*field >= 0) return other->*field == 1;
    return setting;
  };
  auto value = [&](int64 RuleOptions::*field, int64 setting) {
    return own.*field >= 0 ? own.*field : setting;
  };
  core::StrategyParams p;
  p.dynamic = flag(&RuleOptions::dynamic, settings.enable_dynamic_allocation);
  p.emergency = flag(&RuleOptions::emergency, settings.emergency_override_enabled);
  p.burst_mode = flag(&RuleOptions::burst_mode, settings.burst_mode_enabled);
  p.history_weight_ppm = static_cast<uint32_t>(
      value(&RuleOptions::history_weight_ppm, fraction_ppm(settings.user_history_weight)));
  p.load_weight_ppm = static_cast<uint32_t>(
      value(&RuleOptions::load_weight_ppm, fraction_ppm(settings.system_load_weight)));
  p.time_weight_ppm = static_cast<uint32_t>(
      value(&RuleOptions::time_weight_ppm, fraction_ppm(settings.time_factor_weight)));
  p.emergency_threshold_ppm = static_cast<uint32_t>(
      value(&RuleOptions::emergency_threshold_ppm, fraction_ppm(settings.emergency_threshold)));
  p.override_ppm =
      static_cast<uint32_t>(value(&RuleOptions::override_ppm, fraction_ppm(settings.override_percentage)));
  p.burst_multiplier_ppm = static_cast<uint32_t>(
      value(&RuleOptions::burst_multiplier_ppm, fraction_ppm(settings.burst_multiplier)));
  p.burst_window_micros =
      value(&RuleOptions::burst_window_micros, static_cast<int64>(settings.burst_window_s) * USECS_PER_SEC);
  p.max_burst_tokens = value(&RuleOptions::max_burst_tokens, settings.max_burst_tokens);
  return p;
}

bool is_shadow_limit(const ScopeRules& scope, int kind) {
  return settings.shadow_mode || scope.kind[kind].options.shadow == 1;
}

const ScopeRules* find_scope_rules(const core::Hash128& scope) {
  auto it = rules->find(scope);
  return it == rules->end() ? nullptr : &it->second;
}

bool rule_cache_empty() { return rules->empty(); }

uint64 rules_installation() { return loaded_installation; }

const core::Hash128& default_scope_hash() { return default_scope; }

void invalidate_rule_cache() {
  loaded_generation = 0;
  ++invalidations;
}

}  // namespace rate_limiter::pg
