// The public header of src/pg/shmem/: shared memory: the counter segment, partition locks, stream
// pools, installations, metrics.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/shmem/extension_catalog.hpp"
#include "rate_limiter/pg/shmem/installations.hpp"
#include "rate_limiter/pg/shmem/latency_histogram.hpp"
#include "rate_limiter/pg/shmem/metrics.hpp"
#include "rate_limiter/pg/shmem/partition_locks.hpp"
#include "rate_limiter/pg/shmem/segment.hpp"
#include "rate_limiter/pg/shmem/shared_state.hpp"
#include "rate_limiter/pg/shmem/stream_pool.hpp"
