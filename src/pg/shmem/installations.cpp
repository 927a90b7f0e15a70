#include "rate_limiter/pg/shmem/installations.hpp"

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter installations";
constexpr const char* kTrancheName = "rate_limiter_installations";
constexpr int kTags = 1 << 16;

struct Registry {
  uint32 nslots;
  uint32 reserved;
  uint64 clock;  // InstallationSlot::last_used
  ConditionVariable changed;
  uint8 tag_live[kTags];
  InstallationSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

Registry* registry = nullptr;
LWLock* lock = nullptr;
int slot_hint = 0;  // this backend's last slot, checked before a scan

int slot_count_setting() { return Min(settings.max_databases, kMaxInstallationSlots); }

Size registry_bytes() {
  return add_size(offsetof(Registry, slots),
                  mul_size(slot_count_setting(), sizeof(InstallationSlot)));
}

uint16 tag_for(int index, uint16 generation) {
  return static_cast<uint16>((generation << kTagIndexBits) | (index + 1));
}

void init_slot(InstallationSlot* s, int index, uint16 generation) {
  s->installation = 0;
  s->generation = generation;
  s->tag = tag_for(index, generation);
  s->dropping = 0;
  s->last_used = 0;
  s->registered_at = 0;
  s->rules_state = RulesState::NotLoaded;
  s->rules_loader = 0;
  pg_atomic_init_u32(&s->rules_load_invalid, 0);
  pg_atomic_init_u64(&s->rules_epoch, 0);
  pg_atomic_init_u32(&s->rules_overflowed, 0);
  pg_atomic_init_u32(&s->has_parent_links, 0);
  pg_atomic_init_u32(&s->has_concurrency_limits, 0);
  pg_atomic_init_u64(&s->rule_count, 0);
  pg_atomic_init_u64(&s->rule_changes, 0);
  pg_atomic_init_u64(&s->longest_horizon, 0);
  s->counters_state = CountersState::Unknown;
  s->counters_rebuilder = 0;
  s->worker_pid = 0;
  s->worker_blocked_by = 0;
  s->worker_exit = 0;
  s->reserved = 0;
  s->worker_gone_at = 0;
}

// Lock held.  Takes a free slot for `installation`; nullptr when none is free.
InstallationSlot* claim_free_slot(uint64 installation) {
  for (uint32 i = 0; i < registry->nslots; ++i) {
    InstallationSlot& s = registry->slots[i];
    if (s.installation != 0) continue;
    // A new generation on every reuse: late keys of the former occupant
    // never carry the new tag.  (64 generations, then it wraps.)
    const uint16 generation =
        static_cast<uint16>((s.generation + 1) & ((1 << (16 - kTagIndexBits)) - 1));
    init_slot(&s, static_cast<int>(i), generation);
    s.installation = installation;
    s.last_used = ++registry->clock;
    s.registered_at = GetCurrentTimestamp();
    registry->tag_live[s.tag] = 1;
    return &s;
  }
  return nullptr;
}

}  // namespace

SegmentRequest installations_segment() { return {kSegmentName, registry_bytes(), kTrancheName, 1}; }

void attach_installations_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  registry = static_cast<Registry*>(ShmemInitStruct(kSegmentName, registry_bytes(), &found));
  lock = &GetNamedLWLockTranche(kTrancheName)[0].lock;
  if (!found) {
    registry->nslots = static_cast<uint32>(slot_count_setting());
    registry->reserved = 0;
    registry->clock = 0;
    ConditionVariableInit(&registry->changed);
    memset(registry->tag_live, 0, sizeof registry->tag_live);
    for (uint32 i = 0; i < registry->nslots; ++i)
      init_slot(&registry->slots[i], static_cast<int>(i), 0);
  }
  LWLockRelease(AddinShmemInitLock);
}

InstallationSlot* find_installation(uint64 installation) noexcept {
  if (installation == 0) return nullptr;
  InstallationSlot* hint = &registry->slots[slot_hint];
  if (hint->installation == installation) return hint;
  for (uint32 i = 0; i < registry->nslots; ++i) {
    if (registry->slots[i].installation == installation) {
      slot_hint = static_cast<int>(i);
      return &registry->slots[i];
    }
  }
  return nullptr;
}

InstallationSlot* try_register_installation(uint64 installation, bool share_database,
                                            InstallationSlot** stale) noexcept {
  const Oid database = static_cast<Oid>(installation >> 32);
  InstallationSlot* found = nullptr;
  *stale = nullptr;
  LWLockAcquire(lock, LW_EXCLUSIVE);
  for (uint32 i = 0; i < registry->nslots; ++i) {
    InstallationSlot& s = registry->slots[i];
    if (s.installation == installation && !s.dropping) found = &s;
    // One database has one installation at a time: another extension OID
    // of this database belongs to a dropped extension.
    if (!share_database && s.installation != 0 && s.installation != installation && !s.dropping &&
        static_cast<Oid>(s.installation >> 32) == database)
      *stale = &s;
  }
  if (found == nullptr && *stale == nullptr) found = claim_free_slot(installation);
  if (found != nullptr) {
    found->last_used = ++registry->clock;
    *stale = nullptr;
  }
  LWLockRelease(lock);
  if (found != nullptr) slot_hint = static_cast<int>(found - registry->slots);
  return found;
}

uint32 installation_capacity() noexcept { return registry->nslots; }

InstallationSlot* installation_slots() noexcept { return registry->slots; }

int installation_slot_count() noexcept { return static_cast<int>(registry->nslots); }

int configured_installation_slots() noexcept { return slot_count_setting(); }

int installation_index(const InstallationSlot* slot) noexcept {
  return static_cast<int>(slot - registry->slots);
}

const volatile uint8* installation_tag_live() noexcept { return registry->tag_live; }

LWLock* installations_lock() noexcept { return lock; }

ConditionVariable* installations_changed() noexcept { return &registry->changed; }

uint16 begin_installation_reclaim(InstallationSlot* slot) noexcept {
  uint16 tag = 0;
  LWLockAcquire(lock, LW_EXCLUSIVE);
  if (slot->installation != 0 && !slot->dropping) {
    slot->dropping = 1;
    tag = slot->tag;
    registry->tag_live[tag] = 0;
  }
  LWLockRelease(lock);
  return tag;
}

void free_installation_slot(InstallationSlot* slot) noexcept {
  LWLockAcquire(lock, LW_EXCLUSIVE);
  const int index = static_cast<int>(slot - registry->slots);
  const uint16 generation = slot->generation;
  init_slot(slot, index, generation);
  LWLockRelease(lock);
  ConditionVariableBroadcast(&registry->changed);
}

bool restore_installation(uint64 installation, uint16 tag, bool counters_complete) noexcept {
  const int index = (tag & ((1 << kTagIndexBits) - 1)) - 1;
  if (installation == 0 || index < 0 || index >= static_cast<int>(registry->nslots)) return false;
  InstallationSlot& s = registry->slots[index];
  if (s.installation != 0) return false;
  init_slot(&s, index, static_cast<uint16>(tag >> kTagIndexBits));
  s.installation = installation;
  s.counters_state = counters_complete ? CountersState::Complete : CountersState::Unknown;
  s.registered_at = GetCurrentTimestamp();
  registry->tag_live[s.tag] = 1;
  return true;
}

}  // namespace rate_limiter::pg
