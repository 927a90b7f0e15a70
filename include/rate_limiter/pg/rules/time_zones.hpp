// The time zones of calendar periods (period_timezone), by a small id that
// fits a rule record: a registry in shared memory, append-only, of zone
// names (at most kMaxTimeZones distinct zones per server, each at most
// kMaxTimeZoneName bytes), and in each backend the pg_tz of each id.
//
// Locking: one spinlock guards the registry; it is held for a scan of at
// most kMaxTimeZones names and a copy, nothing else, and never together
// with another lock.
#pragma once

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

struct pg_tz;

namespace rate_limiter::pg {

constexpr int kMaxTimeZones = 255;
constexpr int kMaxTimeZoneName = 63;

SegmentRequest time_zone_segment();  // for the map (src/pg/shared_memory.cpp)
void attach_time_zone_memory();      // from attach_shared_memory()

// The id of a zone name (1 ..), registering it; 0 (UTC) with a WARNING
// when pg_tzset() does not know the name or the registry is full.  May
// ereport (out of memory).
uint16 time_zone_id(const char* name);

// Makes time_zone_of(id) answer in this backend.  May ereport.
void prepare_time_zone(uint16 id);

// The zone of a prepared id; nullptr for 0 (UTC) and for an id not
// prepared in this backend.
const pg_tz* time_zone_of(uint16 id) noexcept;

}  // namespace rate_limiter::pg
