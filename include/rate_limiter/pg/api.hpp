// The public header of src/pg/api/: SQL-callable functions.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/api/counters_view.hpp"
#include "rate_limiter/pg/api/rate_limit_trigger.hpp"
#include "rate_limiter/pg/api/result_descriptor.hpp"
