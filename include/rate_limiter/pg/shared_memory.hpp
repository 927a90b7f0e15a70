// The extension's shared memory as a whole: see src/pg/shared_memory.cpp
// for the map of every segment, lock tranche, sizing setting and the lock
// order.
#pragma once

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// Everything the postmaster reserves for us, in bytes (the sum of every
// segment's request).
Size shared_memory_bytes();

void request_shared_memory();  // from shmem_request_hook
void attach_shared_memory();   // from shmem_startup_hook

}  // namespace rate_limiter::pg
