// The public header of src/pg/usage/: token_usage rows: the queue, the log, pending events, the
// queue file.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/usage/queue_drain.hpp"
#include "rate_limiter/pg/usage/usage_log.hpp"
#include "rate_limiter/pg/usage/usage_pending.hpp"
#include "rate_limiter/pg/usage/usage_queue.hpp"
#include "rate_limiter/pg/usage/usage_queue_file.hpp"
