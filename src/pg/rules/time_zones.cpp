#include "rate_limiter/pg/rules/time_zones.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter time zones";

struct Registry {
  slock_t lock;
  int count;
  char names[kMaxTimeZones][kMaxTimeZoneName + 1];
};

Registry* registry = nullptr;
const pg_tz* zones[kMaxTimeZones + 1] = {};  // this backend's, by id
// The last name this backend registered: a load of many rules in one zone
// scans the registry once, not once per rule.
char last_name[kMaxTimeZoneName + 1] = {};
uint16 last_id = 0;

}  // namespace

SegmentRequest time_zone_segment() { return {kSegmentName, sizeof(Registry), nullptr, 0}; }

void attach_time_zone_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  registry = static_cast<Registry*>(ShmemInitStruct(kSegmentName, sizeof(Registry), &found));
  if (!found) {
    SpinLockInit(&registry->lock);
    registry->count = 0;
  }
  LWLockRelease(AddinShmemInitLock);
}

uint16 time_zone_id(const char* name) {
  if (last_id != 0 && strcmp(name, last_name) == 0) return last_id;
  // Rows are validated when set_* writes them; one written around that (or
  // a zone that no longer exists, or a full registry) must not stop every
  // rule of the database from loading: it counts in UTC, with a warning.
  if (strlen(name) > static_cast<size_t>(kMaxTimeZoneName) || pg_tzset(name) == nullptr) {
    ereport(WARNING, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("rate_limiter: period time zone \"%s\" is not recognized; the limit "
                             "counts in UTC",
                             name)));
    return 0;
  }
  int id = 0;
  SpinLockAcquire(&registry->lock);
  for (int i = 0; i < registry->count && id == 0; ++i)
    if (strcmp(registry->names[i], name) == 0) id = i + 1;
  if (id == 0 && registry->count < kMaxTimeZones) {
    strlcpy(registry->names[registry->count], name, sizeof registry->names[0]);
    id = ++registry->count;
  }
  SpinLockRelease(&registry->lock);
  if (id == 0) {
    ereport(WARNING,
            (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
             errmsg("rate_limiter: too many distinct period time zones (at most %d per server); "
                    "a limit in \"%s\" counts in UTC",
                    kMaxTimeZones, name),
             errhint("Restart the server to forget zones no limit uses any more.")));
    return 0;
  }
  zones[id] = pg_tzset(name);
  strlcpy(last_name, name, sizeof last_name);
  last_id = static_cast<uint16>(id);
  return last_id;
}

void prepare_time_zone(uint16 id) {
  if (id == 0 || id > kMaxTimeZones || zones[id] != nullptr) return;
  char name[kMaxTimeZoneName + 1] = {};
  SpinLockAcquire(&registry->lock);
  if (id <= registry->count) strlcpy(name, registry->names[id - 1], sizeof name);
  SpinLockRelease(&registry->lock);
  if (name[0] != '\0') zones[id] = pg_tzset(name);
}

const pg_tz* time_zone_of(uint16 id) noexcept {
  return id == 0 || id > kMaxTimeZones ? nullptr : zones[id];
}

}  // namespace rate_limiter::pg
