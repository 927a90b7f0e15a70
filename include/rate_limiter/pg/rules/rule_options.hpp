// The per-limit options of a rule row (the option columns of token_limits
// and request_limits, the option arguments of every set_* function), in the
// order of sql/schema/options.tsv, which generates the SQL side.
// scripts/check_options.py (make lint-options, test/t/021) fails when this
// list and the file differ.  RuleColumns (rules.hpp) binds and reads them.
#pragma once

#define RL_RULE_OPTIONS(X)      \
  X(algorithm)                  \
  X(burst)                      \
  X(burst_limit)                \
  X(burst_window_seconds)       \
  X(enable_dynamic_allocation)  \
  X(emergency_override_enabled) \
  X(burst_mode_enabled)         \
  X(user_history_weight)        \
  X(system_load_weight)         \
  X(time_factor_weight)         \
  X(emergency_threshold)        \
  X(override_percentage)        \
  X(burst_multiplier)           \
  X(burst_window)               \
  X(max_burst_tokens)           \
  X(shadow_mode)                \
  X(period_anchor)              \
  X(period_timezone)

namespace rate_limiter::pg {

enum class RuleOption : int {
#define RL_RULE_OPTION_ENUM(name) name,
  RL_RULE_OPTIONS(RL_RULE_OPTION_ENUM)
#undef RL_RULE_OPTION_ENUM
};

#define RL_RULE_OPTION_COUNT(name) +1
constexpr int kRuleOptionCount = 0 RL_RULE_OPTIONS(RL_RULE_OPTION_COUNT);
#undef RL_RULE_OPTION_COUNT

// The column (and argument) name of each option, by RuleOption.
constexpr const char* kRuleOptionNames[kRuleOptionCount] = {
#define RL_RULE_OPTION_NAME(name) #name,
    RL_RULE_OPTIONS(RL_RULE_OPTION_NAME)
#undef RL_RULE_OPTION_NAME
};

}  // namespace rate_limiter::pg
