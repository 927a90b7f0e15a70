// What one shared-memory segment needs from the postmaster.
//
// Each subsystem that keeps state in shared memory says it with one
// X_segment() function; the map (src/pg/shared_memory.cpp) adds them up in
// shared_memory_bytes() and requests the total and the lock tranches in one
// place.  Attaching stays with each subsystem (attach_X_memory()), called
// from the map in the same order.
#pragma once

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

struct SegmentRequest {
  const char* name;     // ShmemInitStruct name
  Size bytes;           // for RequestAddinShmemSpace
  const char* tranche;  // named LWLock tranche, or nullptr (spinlock or none)
  int locks;            // LWLocks in the tranche
};

}  // namespace rate_limiter::pg
