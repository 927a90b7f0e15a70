// The public header of src/pg/support/: PostgreSQL headers, the C++/ereport boundary, settings,
// argument checks, the transaction-effects log, uninitialized arrays.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/support/arguments.hpp"
#include "rate_limiter/pg/support/boundary.hpp"
#include "rate_limiter/pg/support/postgres.hpp"
#include "rate_limiter/pg/support/settings.hpp"
#include "rate_limiter/pg/support/transaction_log.hpp"
#include "rate_limiter/pg/support/uninitialized_array.hpp"
