// The public header of src/pg/workers/: background workers: launcher, per-database flusher and
// upkeep, reclaim.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/workers/database_commands.hpp"
#include "rate_limiter/pg/workers/database_worker.hpp"
#include "rate_limiter/pg/workers/launcher.hpp"
#include "rate_limiter/pg/workers/queue_flush.hpp"
#include "rate_limiter/pg/workers/reclaim.hpp"
#include "rate_limiter/pg/workers/upkeep.hpp"
#include "rate_limiter/pg/workers/usage_batch_insert.hpp"
#include "rate_limiter/pg/workers/worker_sql.hpp"
