#include "rate_limiter/pg/support/settings.hpp"

#include <cmath>

#include "rate_limiter/pg/support/postgres.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kSecondsPerDay = 86400;
constexpr int kDefaultUsageRetentionS = 90 * kSecondsPerDay;  // 90 days
// Alerts (docs/monitoring.md, "Alerts").
constexpr int kDefaultAbuseDenials = 20;
constexpr int kDefaultAbuseWindowS = 60;
constexpr int kDefaultAlertIntervalS = 60;
constexpr int kDefaultAlertFlushLagMs = 10000;
constexpr int kDefaultAlertQueueSize = 4096;
// In-flight leases of concurrency limits (engine/leases.hpp), about 200
// bytes each.
constexpr int kDefaultMaxLeases = 16384;

}  // namespace

Settings settings = {
    /* max_keys */ 100000,
    /* max_revocations */ 10000,
    /* max_rules */ 100000,
    /* max_databases */ 128,
    /* configured_key_reserve */ 0.1,
    /* role_key_share */ 0.5,
    /* alert_table_fill */ 90,
    /* failure_mode */ kFailClosed,
    /* lock_timeout_ms */ 1000,
    /* share_high */ 0.5,
    /* share_medium */ 0.3,
    /* share_low */ 0.2,
    /* enable_dynamic_allocation */ false,
    /* emergency_override_enabled */ true,
    /* burst_mode_enabled */ true,
    /* user_history_weight */ 0.3,
    /* system_load_weight */ 0.2,
    /* time_factor_weight */ 0.1,
    /* emergency_threshold */ 0.95,
    /* override_percentage */ 0.8,
    /* burst_multiplier */ 2.0,
    /* burst_window_s */ 900,
    /* max_burst_tokens */ 1000,
    /* refund_on_abort */ false,
    /* recovery_timeout_ms */ 10000,
    /* usage_log */ kUsageLogAsync,
    /* flush_interval_ms */ 200,
    /* usage_database */ nullptr,
    /* database_queue_share */ 0.5,
    /* usage_queue_size_kb */ 8192,
    /* queue_full_wait_ms */ 100,
    /* transaction_queue_share */ 0.05,
    /* usage_retention_s */ kDefaultUsageRetentionS,
    /* shadow_mode */ false,
    /* alert_channel */ nullptr,
    /* alert_thresholds */ nullptr,
    /* abuse_denials */ kDefaultAbuseDenials,
    /* abuse_window_s */ kDefaultAbuseWindowS,
    /* alert_interval_s */ kDefaultAlertIntervalS,
    /* alert_flush_lag_ms */ kDefaultAlertFlushLagMs,
    /* alert_queue_size */ kDefaultAlertQueueSize,
    /* log_decisions */ kLogDecisionsOff,
    /* log_decisions_sample_rate */ 1.0,
    /* debug_hold_lock_ms */ 0,
    /* debug_time_offset_s */ 0,
    /* debug_clock_s */ 0,
    /* debug_revocation_load_delay_ms */ 0,
    /* debug_rule_load_delay_ms */ 0,
    /* max_leases */ kDefaultMaxLeases,
};

namespace {

const struct config_enum_entry kLogDecisionsModes[] = {
    {"off", kLogDecisionsOff, false},
    {"denied", kLogDecisionsDenied, false},
    {"all", kLogDecisionsAll, false},
    {nullptr, 0, false},
};

const struct config_enum_entry kFailureModes[] = {
    {"closed", kFailClosed, false},
    {"open", kFailOpen, false},
    {nullptr, 0, false},
};

const struct config_enum_entry kUsageLogModes[] = {
    {"async", kUsageLogAsync, false},
    {"sync", kUsageLogSync, false},
    {"off", kUsageLogOff, false},
    {nullptr, 0, false},
};

// Parses "80, 95,100" into ascending distinct percentages.  Returns false
// (with a GUC error detail) on anything else.
bool parse_thresholds(const char* text, AlertThresholds* out) {
  AlertThresholds t;
  const char* p = text;
  while (*p != '\0') {
    while (*p == ' ' || *p == ',') ++p;
    if (*p == '\0') break;
    char* end = nullptr;
    const long v = strtol(p, &end, 10);
    if (end == p || v < 1 || v > 100) {
      GUC_check_errdetail(
          "Thresholds are integer percentages between 1 and 100, separated by commas.");
      return false;
    }
    if (t.count == kMaxAlertThresholds) {
      GUC_check_errdetail("At most %d thresholds.", kMaxAlertThresholds);
      return false;
    }
    int i = t.count++;
    while (i > 0 && t.pct[i - 1] > v) {
      t.pct[i] = t.pct[i - 1];
      --i;
    }
    t.pct[i] = static_cast<int>(v);
    if (i > 0 && t.pct[i - 1] == v) {  // duplicate: drop it again
      for (int j = i; j + 1 < t.count; ++j) t.pct[j] = t.pct[j + 1];
      --t.count;
    }
    p = end;
    while (*p == ' ') ++p;
    if (*p != '\0' && *p != ',') {
      GUC_check_errdetail(
          "Thresholds are integer percentages between 1 and 100, separated by commas.");
      return false;
    }
  }
  *out = t;
  return true;
}

bool check_thresholds(char** newval, void** extra, GucSource) {
  AlertThresholds parsed;
  if (!parse_thresholds(*newval, &parsed)) return false;
  // GUC extra must be malloc'd; it is freed by the GUC machinery.
  auto* copy = static_cast<AlertThresholds*>(malloc(sizeof(AlertThresholds)));
  if (copy == nullptr) return false;
  *copy = parsed;
  *extra = copy;
  return true;
}

void assign_thresholds(const char*, void* extra) {
  alert_thresholds = extra != nullptr ? *static_cast<AlertThresholds*>(extra) : AlertThresholds{};
}

}  // namespace

AlertThresholds alert_thresholds;

void define_settings() {
  DefineCustomIntVariable(
      "rate_limiter.max_keys", "Maximum number of live counters kept in shared memory.",
      "Each scope and kind of limit that a request touches uses one counter. "
      "Counters whose window has ended are evicted when space is needed.",
      &settings.max_keys, 100000, 16, 100000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.max_rules",
      "Maximum number of rules (rows of token_limits and request_limits) kept in shared memory, "
      "over all databases.",
      "Each rule takes about 140 bytes. Rules that do not fit are read from their table when a "
      "call needs them (slower, still exact); the rules_overflowed metric tells.",
      &settings.max_rules, 100000, 16, 100000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.max_databases",
      "Maximum number of databases with the extension installed that one server serves at once.",
      "Each has a slot for its rules, counters and worker.", &settings.max_databases, 128, 1, 1023,
      PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);

  DefineCustomRealVariable(
      "rate_limiter.configured_key_reserve",
      "Fraction of the counter table kept for users and endpoints that have a rule of their own.",
      "Counters of users who are only under the default rule fill at most the rest.",
      &settings.configured_key_reserve, 0.1, 0.0, 0.9, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  // SUSET: only a superuser may let a role take more (ALTER ROLE ... SET).
  DefineCustomRealVariable(
      "rate_limiter.role_key_share",
      "Largest fraction of the default-rule counters that one role may hold.",
      "A role over it is refused with RL507, whatever failure_mode says. Set per role with ALTER "
      "ROLE ... SET (superuser).",
      &settings.role_key_share, 0.5, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "rate_limiter.alert_table_fill",
      "Fill level of the counter table (percent) from which a table_filling alert is raised.",
      "0 disables the alert.", &settings.alert_table_fill, 90, 0, 100, PGC_SIGHUP, 0, nullptr,
      nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.max_leases",
      "Maximum number of in-flight leases (unsettled grants under a concurrency limit), over all "
      "databases.",
      "When all are held, a call under a concurrency limit is denied with reason "
      "lease_table_full.",
      &settings.max_leases, kDefaultMaxLeases, 1, 1 << 24, PGC_POSTMASTER, 0, nullptr, nullptr,
      nullptr);

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
      "A wait that runs out raises 55P03 (or, when failure_mode is open, allows a bounded grant "
      "charged at the end of the transaction). 0 waits without bound. Superuser-only: a shorter "
      "wait would let a session fail open on purpose.",
      &settings.lock_timeout_ms, 1000, 0, 600000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr,
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

  // Strategies.  SUSET: any of them can loosen a limit.
  DefineCustomBoolVariable(
      "rate_limiter.enable_dynamic_allocation",
      "Default of enable_dynamic_allocation for limits that leave it NULL.",
      "Dynamic allocation lowers the priority share of heavy users, under load and late in the "
      "window.",
      &settings.enable_dynamic_allocation, false, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "rate_limiter.emergency_override_enabled",
      "Default of emergency_override_enabled for limits that leave it NULL.",
      "Only roles with EXECUTE on rate_limiter_emergency_access() can use the override.",
      &settings.emergency_override_enabled, true, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable("rate_limiter.burst_mode_enabled",
                           "Default of burst_mode_enabled for limits that leave it NULL.", nullptr,
                           &settings.burst_mode_enabled, true, PGC_SUSET, 0, nullptr, nullptr,
                           nullptr);
  DefineCustomRealVariable(
      "rate_limiter.user_history_weight",
      "Dynamic allocation: weight of the user's recent usage (moving average of used/limit).",
      nullptr, &settings.user_history_weight, 0.3, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr,
      nullptr);
  DefineCustomRealVariable(
      "rate_limiter.system_load_weight",
      "Dynamic allocation: weight of the system load (usage of the endpoint-wide limits).", nullptr,
      &settings.system_load_weight, 0.2, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable("rate_limiter.time_factor_weight",
                           "Dynamic allocation: weight of the position in the window.", nullptr,
                           &settings.time_factor_weight, 0.1, 0.0, 1.0, PGC_SUSET, 0, nullptr,
                           nullptr, nullptr);
  DefineCustomRealVariable(
      "rate_limiter.emergency_threshold",
      "Emergency override: usage fraction from which the emergency allowance opens.", nullptr,
      &settings.emergency_threshold, 0.95, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable(
      "rate_limiter.override_percentage",
      "Emergency override: allowance per window beyond the limit, as a fraction of the limit.",
      nullptr, &settings.override_percentage, 0.8, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr,
      nullptr);
  DefineCustomRealVariable(
      "rate_limiter.burst_multiplier",
      "Burst mode: factor applied to the per-request cap (the priority share).", nullptr,
      &settings.burst_multiplier, 2.0, 1.0, 100.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("rate_limiter.burst_window",
                          "Burst mode: length of the window of the burst budget.", nullptr,
                          &settings.burst_window_s, 900, 1, 315360000, PGC_SUSET, GUC_UNIT_S,
                          nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "rate_limiter.max_burst_tokens",
      "Burst mode: tokens above the normal cap one quota may grant per burst window.", nullptr,
      &settings.max_burst_tokens, 1000, 0, INT_MAX, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "rate_limiter.refund_on_abort",
      "Give back the quota charged by a transaction (or savepoint) that rolls back.",
      "The same as context {\"refund_on_abort\": true} on every call.", &settings.refund_on_abort,
      false, PGC_USERSET, 0, nullptr, nullptr, nullptr);

  // The usage log.  usage_log is SUSET: 'off' would let a session hide its
  // usage.
  DefineCustomEnumVariable(
      "rate_limiter.usage_log", "How token_usage rows are written.",
      "async queues them in shared memory for the database's worker; sync inserts them in the "
      "caller's transaction; off writes none.",
      &settings.usage_log, kUsageLogAsync, kUsageLogModes, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "rate_limiter.flush_interval", "How often each database's worker writes queued usage rows.",
      "It also wakes up early when the queue is half full.", &settings.flush_interval_ms, 200, 10,
      60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomStringVariable(
      "rate_limiter.database",
      "Restricts the rate_limiter workers to this one database; empty serves every database.",
      "Every database where the extension is installed gets a worker (asynchronous usage log, "
      "alerts, upkeep, retention). When set, only the named database does; calls elsewhere write "
      "their usage rows synchronously and raise no alerts.",
      &settings.usage_database, "", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomRealVariable(
      "rate_limiter.database_queue_share",
      "Largest fraction of the usage queue, and of the alert queue, that one database may hold.",
      "A database whose worker is behind or missing fills its share and then writes usage rows "
      "synchronously (and drops alerts); the other databases keep the rest.",
      &settings.database_queue_share, 0.5, 0.01, 1.0, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("rate_limiter.usage_queue_size", "Shared memory for queued usage rows.",
                          "A row takes about 60 bytes plus its ids.", &settings.usage_queue_size_kb,
                          8192, 64, 1024 * 1024, PGC_POSTMASTER, GUC_UNIT_KB, nullptr, nullptr,
                          nullptr);
  DefineCustomIntVariable(
      "rate_limiter.queue_full_wait",
      "Longest wait for room in a full usage queue before writing the row synchronously.", nullptr,
      &settings.queue_full_wait_ms, 100, 0, 60000, PGC_USERSET, GUC_UNIT_MS, nullptr, nullptr,
      nullptr);
  // SUSET: raised by the caller, it would let one open transaction hold
  // the queue the other sessions need.
  DefineCustomRealVariable(
      "rate_limiter.transaction_queue_share",
      "Largest fraction of its database's share of the usage queue that one transaction may hold "
      "reserved for its refund_on_abort rows.",
      "Past it, the transaction writes those rows itself, in the transaction, without waiting. All "
      "transactions together hold at most half of a database's share.",
      &settings.transaction_queue_share, 0.05, 0.001, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "rate_limiter.usage_retention", "Age after which the flusher deletes token_usage rows.",
      "Rows inside twice the longest window of any limit are kept regardless. 0 keeps every row.",
      &settings.usage_retention_s, kDefaultUsageRetentionS, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
      nullptr, nullptr, nullptr);

  // Shadow mode: SUSET, it lifts every limit.
  DefineCustomBoolVariable(
      "rate_limiter.shadow_mode", "Treat every limit as a shadow limit: count, never deny.",
      "Decisions are computed and charged but always allowed; reason and the shadow_denials "
      "metric tell what would have happened.",
      &settings.shadow_mode, false, PGC_SUSET, 0, nullptr, nullptr, nullptr);

  // Alerts.  Raised by backends into a shared-memory queue, written to
  // rate_limit_alerts and sent with NOTIFY by the flusher.
  DefineCustomStringVariable(
      "rate_limiter.alert_channel", "NOTIFY channel of the alerts; empty sends none.",
      "The flusher sends one notification per alert row it inserts.", &settings.alert_channel,
      "rate_limiter", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomStringVariable(
      "rate_limiter.alert_thresholds",
      "Usage percentages of a limit whose crossing raises a quota alert.",
      "Comma-separated integers from 1 to 100; 100 means exhausted. Empty: no quota alerts.",
      &settings.alert_thresholds, "80,95,100", PGC_SUSET, 0, check_thresholds, assign_thresholds,
      nullptr);
  DefineCustomIntVariable(
      "rate_limiter.abuse_denials",
      "Denials of one user within rate_limiter.abuse_window above which an abuse alert is raised.",
      "0 disables abuse alerts.", &settings.abuse_denials, kDefaultAbuseDenials, 0, 1000000000,
      PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("rate_limiter.abuse_window",
                          "Fixed window in which denials of one user are counted.", nullptr,
                          &settings.abuse_window_s, kDefaultAbuseWindowS, 1, 86400 * 366, PGC_SUSET,
                          GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("rate_limiter.alert_interval",
                          "Degradation alerts (table full, table filling, fail open, flush lag, "
                          "usage dead letter): at most one per kind per interval.",
                          nullptr, &settings.alert_interval_s, kDefaultAlertIntervalS, 1,
                          86400 * 366, PGC_SUSET, GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "rate_limiter.alert_flush_lag",
      "Age of the oldest queued usage row above which the flusher raises a flush_lag alert.",
      "0 disables the alert.", &settings.alert_flush_lag_ms, kDefaultAlertFlushLagMs, 0, INT_MAX,
      PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "rate_limiter.alert_queue_size",
      "Alerts held in shared memory until the flusher writes them; more are dropped.", nullptr,
      &settings.alert_queue_size, kDefaultAlertQueueSize, 16, 1000000, PGC_POSTMASTER, 0, nullptr,
      nullptr, nullptr);

  // Superuser-only, like log_lock_waits: the lines name users and
  // endpoints, and a role must not be able to flood the server log.
  DefineCustomEnumVariable(
      "rate_limiter.log_decisions",
      "Which decisions of allocate_tokens, check_rate_limit, enforce_rate_limit and "
      "rate_limit_trigger are written to the server log.",
      "off logs none; denied logs the denied calls; all logs every call. One LOG line per "
      "decision, starting with \"rate_limiter decision:\".",
      &settings.log_decisions, kLogDecisionsOff, kLogDecisionsModes, PGC_SUSET, 0, nullptr, nullptr,
      nullptr);
  DefineCustomRealVariable(
      "rate_limiter.log_decisions_sample_rate",
      "Fraction of the decisions selected by rate_limiter.log_decisions that are logged.",
      "1 logs each of them, 0 none; drawn at random per decision, so that \"all\" is usable "
      "under load.",
      &settings.log_decisions_sample_rate, 1.0, 0.0, 1.0, PGC_SUSET, 0, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.recovery_timeout",
      "Longest wait for another session's rebuild of the counters after a crash or promotion.",
      "A wait that runs out raises 55P03.", &settings.recovery_timeout_ms, 10000, 0, 3600000,
      PGC_USERSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);

  DefineCustomIntVariable("rate_limiter.debug_hold_lock_ms",
                          "Testing only: keep the partition locks this long during each call.",
                          "Used by the test suite to force lock waits and timeouts.",
                          &settings.debug_hold_lock_ms, 0, 0, 10000, PGC_SUSET,
                          GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr,
                          nullptr);
  DefineCustomIntVariable("rate_limiter.debug_time_offset",
                          "Testing only: shift the limiter's clock by this many seconds.",
                          "Used by the test suite to cross window boundaries without sleeping.",
                          &settings.debug_time_offset_s, 0, -2000000000, 2000000000, PGC_SUSET,
                          GUC_UNIT_S | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr,
                          nullptr);

  DefineCustomIntVariable(
      "rate_limiter.debug_clock",
      "Testing only: freeze the limiter's clock at this many seconds after the Unix epoch.",
      "0 uses the wall clock.  debug_time_offset applies on top.", &settings.debug_clock_s, 0, 0,
      INT_MAX, PGC_SUSET, GUC_UNIT_S | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr,
      nullptr);

  DefineCustomIntVariable(
      "rate_limiter.debug_revocation_load_delay_ms",
      "Testing only: pause this long between reading token_revocations and filling the "
      "revocation cache.",
      "Used by the test suite to commit revocations while a load is under way.",
      &settings.debug_revocation_load_delay_ms, 0, 0, 60000, PGC_SUSET,
      GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);

  DefineCustomIntVariable(
      "rate_limiter.debug_rule_load_delay_ms",
      "Testing only: pause this long after a rule load took its snapshot, before it reads a row.",
      "Used by the test suite to commit rule changes while a load is under way.",
      &settings.debug_rule_load_delay_ms, 0, 0, 60000, PGC_SUSET,
      GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);

  MarkGUCPrefixReserved("rate_limiter");
}

uint32_t fraction_ppm(double fraction) {
  return static_cast<uint32_t>(std::llround(fraction * core::kShareScale));
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
