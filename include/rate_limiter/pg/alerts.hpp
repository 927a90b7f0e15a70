// The public header of src/pg/alerts/: alerts: raising them and their queue.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/alerts/alert_queue.hpp"
#include "rate_limiter/pg/alerts/alerts.hpp"
