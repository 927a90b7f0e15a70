#include "rate_limiter/pg/engine/key_budget.hpp"

#include <algorithm>
#include <cmath>

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter key budget";

struct OwnerMap {
  Oid roles[core::kMaxOwners + 1];  // [owner] = role; [0] unused; [kMaxOwners] shared
};

OwnerMap* owners = nullptr;
Oid cached_role = InvalidOid;  // this backend's last lookup
uint8 cached_owner = 0;

// Counters a tally holds over every partition, read without the partition
// locks (a moment's staleness only delays a reuse).
uint64 tally_total(uint8 owner) {
  uint64 total = 0;
  for (uint32 p = 0; p < shared->geometry.partitions; ++p)
    total += counter_partition(p).owner_count(owner);
  return total;
}

uint8 owner_for(Oid role) {
  // The cached answer is rechecked: the tally may have been given to
  // another role since (below).
  if (role == cached_role && cached_owner != 0 && owners->roles[cached_owner] == role)
    return cached_owner;
  uint8 owner = 0;
  for (uint8 o = 1; o < core::kMaxOwners && owner == 0; ++o)
    if (owners->roles[o] == role) owner = o;
  if (owner == 0) {
    LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
    for (uint8 o = 1; o < core::kMaxOwners && owner == 0; ++o) {
      if (owners->roles[o] == role) owner = o;
      if (owners->roles[o] == InvalidOid) {
        owners->roles[o] = role;
        owner = o;
      }
    }
    // Every tally named: take one that holds no counter any more.
    for (uint8 o = 1; o < core::kMaxOwners && owner == 0; ++o) {
      if (tally_total(o) == 0) {
        owners->roles[o] = role;
        owner = o;
      }
    }
    LWLockRelease(installations_lock());
    if (owner == 0) owner = core::kMaxOwners;  // every tally in use: the shared one
  }
  cached_role = role;
  cached_owner = owner;
  return owner;
}

}  // namespace

SegmentRequest key_budget_segment() { return {kSegmentName, sizeof(OwnerMap), nullptr, 0}; }

void attach_key_budget_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  owners = static_cast<OwnerMap*>(ShmemInitStruct(kSegmentName, sizeof(OwnerMap), &found));
  if (!found) memset(owners, 0, sizeof(OwnerMap));
  LWLockRelease(AddinShmemInitLock);
}

uint32 default_class_cap(uint32 capacity) noexcept {
  const double reserve = std::clamp(settings.configured_key_reserve, 0.0, 1.0);
  return static_cast<uint32>(std::floor(capacity * (1.0 - reserve)));
}

uint32 role_cap(uint32 capacity) noexcept {
  const double share = std::clamp(settings.role_key_share, 0.0, 1.0);
  // At least one counter, so that a tiny table still serves every role.
  return std::max<uint32>(1, static_cast<uint32>(std::floor(default_class_cap(capacity) * share)));
}

core::Admission key_admission(bool default_class) noexcept {
  core::Admission a;
  if (!default_class) return a;
  a.owner = owner_for(GetUserId());
  // Caps per partition: every partition has the same capacity.
  const uint32 capacity = shared->geometry.capacity_per_partition;
  a.class_cap = default_class_cap(capacity);
  a.owner_cap = role_cap(capacity);
  return a;
}

void save_key_owners(Oid* roles) noexcept {
  // Only tallies that still hold counters keep their role.
  for (int o = 0; o <= core::kMaxOwners; ++o)
    roles[o] = o >= 1 && o < core::kMaxOwners && tally_total(static_cast<uint8>(o)) > 0
                   ? owners->roles[o]
                   : InvalidOid;
}

void restore_key_owners(const Oid* roles) noexcept {
  memcpy(owners->roles, roles, sizeof owners->roles);
}

Oid key_owner_role(uint8 owner) noexcept {
  return owner >= 1 && owner < core::kMaxOwners ? owners->roles[owner] : InvalidOid;
}

}  // namespace rate_limiter::pg
