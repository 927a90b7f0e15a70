// GUC settings (rate_limiter.*).  Defined in _PG_init; read anywhere.
#pragma once

#include <cstdint>

#include "rate_limiter/core/decision.hpp"

namespace rate_limiter::pg {

enum FailureMode { kFailClosed = 0, kFailOpen = 1 };
enum UsageLogMode { kUsageLogAsync = 0, kUsageLogSync = 1, kUsageLogOff = 2 };
enum LogDecisionsMode { kLogDecisionsOff = 0, kLogDecisionsDenied = 1, kLogDecisionsAll = 2 };

struct Settings {
  int max_keys;         // rate_limiter.max_keys (postmaster)
  int max_revocations;  // rate_limiter.max_revocations (postmaster)
  int max_rules;        // rate_limiter.max_rules (postmaster): shared rule table records
  int max_databases;    // rate_limiter.max_databases (postmaster): installations served at once
  // Counter table exhaustion (key_budget.hpp).
  double configured_key_reserve;  // rate_limiter.configured_key_reserve (superuser)
  double role_key_share;          // rate_limiter.role_key_share (superuser, per role)
  int alert_table_fill;           // rate_limiter.alert_table_fill (sighup): percent; 0 disables
  int failure_mode;               // rate_limiter.failure_mode: FailureMode
  int lock_timeout_ms;            // rate_limiter.lock_timeout; 0 waits without bound
  double share_high;              // rate_limiter.priority_share_high
  double share_medium;            // rate_limiter.priority_share_medium
  double share_low;               // rate_limiter.priority_share_low
  // Strategy defaults for limits whose row leaves them NULL.
  bool enable_dynamic_allocation;   // rate_limiter.enable_dynamic_allocation
  bool emergency_override_enabled;  // rate_limiter.emergency_override_enabled
  bool burst_mode_enabled;          // rate_limiter.burst_mode_enabled
  double user_history_weight;       // rate_limiter.user_history_weight
  double system_load_weight;        // rate_limiter.system_load_weight
  double time_factor_weight;        // rate_limiter.time_factor_weight
  double emergency_threshold;       // rate_limiter.emergency_threshold
  double override_percentage;       // rate_limiter.override_percentage
  double burst_multiplier;          // rate_limiter.burst_multiplier
  int burst_window_s;               // rate_limiter.burst_window
  int max_burst_tokens;             // rate_limiter.max_burst_tokens
  bool refund_on_abort;             // rate_limiter.refund_on_abort
  int recovery_timeout_ms;          // rate_limiter.recovery_timeout
  // The usage log and the workers (usage_log.hpp, usage_queue.hpp,
  // launcher.hpp, database_worker.hpp).
  int usage_log;                   // rate_limiter.usage_log: UsageLogMode
  int flush_interval_ms;           // rate_limiter.flush_interval (sighup)
  char* usage_database;            // rate_limiter.database (postmaster): '' serves every database
  double database_queue_share;     // rate_limiter.database_queue_share (sighup): of each queue, per
                                   // database
  int usage_queue_size_kb;         // rate_limiter.usage_queue_size (postmaster)
  int queue_full_wait_ms;          // rate_limiter.queue_full_wait
  double transaction_queue_share;  // rate_limiter.transaction_queue_share (superuser): of a
                                   // database's share
  int usage_retention_s;           // rate_limiter.usage_retention (sighup); 0 keeps rows
  // Shadow mode and alerts (alert_queue.hpp, docs/monitoring.md, "Alerts").
  bool shadow_mode;        // rate_limiter.shadow_mode: every limit is a shadow limit
  char* alert_channel;     // rate_limiter.alert_channel (sighup): NOTIFY channel; '' none
  char* alert_thresholds;  // rate_limiter.alert_thresholds: "80,95,100"
  int abuse_denials;       // rate_limiter.abuse_denials; 0 disables abuse alerts
  int abuse_window_s;      // rate_limiter.abuse_window
  int alert_interval_s;    // rate_limiter.alert_interval: dedup window of degradation alerts
  int alert_flush_lag_ms;  // rate_limiter.alert_flush_lag (sighup); 0 disables
  int alert_queue_size;    // rate_limiter.alert_queue_size (postmaster): records
  // Decision log (decision_log.hpp).
  int log_decisions;                   // rate_limiter.log_decisions (superuser): LogDecisionsMode
  double log_decisions_sample_rate;    // rate_limiter.log_decisions_sample_rate (superuser): 0..1
  int debug_hold_lock_ms;              // rate_limiter.debug_hold_lock_ms (developer)
  int debug_time_offset_s;             // rate_limiter.debug_time_offset (developer)
  int debug_clock_s;                   // rate_limiter.debug_clock (developer): 0 = wall clock
  int debug_revocation_load_delay_ms;  // rate_limiter.debug_revocation_load_delay_ms (developer)
  int debug_rule_load_delay_ms;        // rate_limiter.debug_rule_load_delay_ms (developer)
  int max_leases;  // rate_limiter.max_leases (postmaster): in-flight leases, all databases
};

extern Settings settings;

// rate_limiter.alert_thresholds, parsed: ascending percentages 1..100.
constexpr int kMaxAlertThresholds = 8;
struct AlertThresholds {
  int count = 0;
  int pct[kMaxAlertThresholds] = {};
};
extern AlertThresholds alert_thresholds;

void define_settings();

core::PriorityShares current_priority_shares();

// A fraction setting in parts per million.
uint32_t fraction_ppm(double fraction);

}  // namespace rate_limiter::pg
