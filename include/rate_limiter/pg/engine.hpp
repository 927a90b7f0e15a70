// The public header of src/pg/engine/: the decision: the hot path, fail-open grants, grant charges,
// counters across restarts.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/engine/counter_file.hpp"
#include "rate_limiter/pg/engine/counter_recovery.hpp"
#include "rate_limiter/pg/engine/decision_log.hpp"
#include "rate_limiter/pg/engine/emergency_access.hpp"
#include "rate_limiter/pg/engine/fail_open.hpp"
#include "rate_limiter/pg/engine/grant_charges.hpp"
#include "rate_limiter/pg/engine/hot_path.hpp"
#include "rate_limiter/pg/engine/key_budget.hpp"
#include "rate_limiter/pg/engine/leases.hpp"
#include "rate_limiter/pg/engine/result_names.hpp"
#include "rate_limiter/pg/engine/transaction_effects.hpp"
