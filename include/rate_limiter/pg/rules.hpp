// The public header of src/pg/rules/: rules: rows, the shared rule table, loading, lookup,
// transactional changes.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/rules/calendar_rules.hpp"
#include "rate_limiter/pg/rules/concurrency_limits.hpp"
#include "rate_limiter/pg/rules/parent_links.hpp"
#include "rate_limiter/pg/rules/rule_changes.hpp"
#include "rate_limiter/pg/rules/rule_loader.hpp"
#include "rate_limiter/pg/rules/rule_lookup.hpp"
#include "rate_limiter/pg/rules/rule_options.hpp"
#include "rate_limiter/pg/rules/rule_table.hpp"
#include "rate_limiter/pg/rules/rules.hpp"
#include "rate_limiter/pg/rules/time_zones.hpp"
