#include "rate_limiter/pg/revocations/revocation_cache.hpp"

#include <type_traits>

#include "rate_limiter/core/revocation_set.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter_revocations";
constexpr const char* kTrancheName = "rate_limiter_revocations";

// Installations whose revocations can be cached at once.  More than that
// (many databases using the extension) evicts the least recently used one,
// which simply loads again on its next use.
constexpr int kMaxInstallations = 64;

enum EntryState : uint32 { kFree = 0, kNotLoaded, kLoaded, kOverflowed };

struct InstallationEntry {
  uint64 installation;  // database OID << 32 | extension OID; 0 when free
  // Taken from RevocationShared::clock whenever a committed change touches
  // this installation (or the entry is created): loaders compare it.
  uint64 generation;
  uint32 state;   // EntryState
  uint32 cached;  // members of the set that belong to this installation
  // CLOCK (second chance) bit for eviction: set by lookups under LW_SHARED,
  // hence atomic; cleared by the eviction sweep.
  pg_atomic_uint32 referenced;
};

struct RevocationShared {
  uint64 clock;  // the last generation handed out
  uint32 hand;   // where the eviction sweep resumes
  uint32 reserved;
  InstallationEntry entries[kMaxInstallations];
  core::RevocationSetHeader set;
};

static_assert(std::is_trivially_copyable_v<core::RevocationSlot>);
static_assert(std::is_trivially_copyable_v<core::RevocationSetHeader>);

// Set in every process by attach_revocation_memory().
RevocationShared* state = nullptr;
core::RevocationSlot* slots = nullptr;
LWLock* lock = nullptr;
int entry_hint = 0;  // this backend's last entry, checked before a scan

uint32 capacity_setting() { return static_cast<uint32>(settings.max_revocations); }

Size header_bytes() { return MAXALIGN(sizeof(RevocationShared)); }

Size segment_bytes() {
  return add_size(header_bytes(), mul_size(core::revocation_slots_for(capacity_setting()),
                                           sizeof(core::RevocationSlot)));
}

core::RevocationSet the_set() { return core::RevocationSet(&state->set, slots); }

InstallationEntry* find_entry(uint64 installation) noexcept {
  if (state->entries[entry_hint].installation == installation) return &state->entries[entry_hint];
  for (int i = 0; i < kMaxInstallations; ++i) {
    if (state->entries[i].installation == installation) {
      entry_hint = i;
      return &state->entries[i];
    }
  }
  return nullptr;
}

// Exclusive lock held.  The installation's members leave the set; it must
// be loaded again before its next lookup.
void drop_members(InstallationEntry* e) noexcept {
  the_set().erase_installation(e->installation);
  e->cached = 0;
  e->state = kNotLoaded;
}

void free_entry(InstallationEntry* e) noexcept {
  drop_members(e);
  e->installation = 0;
  e->state = kFree;
}

// Exclusive lock held.  Finds the installation's entry or makes one,
// NotLoaded.  Never fails: a full table evicts the least recently used entry.
InstallationEntry* find_or_add_entry(uint64 installation) noexcept {
  if (InstallationEntry* e = find_entry(installation)) return e;
  // One database has at most one installation: an entry of the same
  // database with another extension OID belongs to a dropped extension.
  const uint64 database = installation >> 32;
  InstallationEntry* slot = nullptr;
  for (InstallationEntry& e : state->entries) {
    if (e.state != kFree && (e.installation >> 32) == database) free_entry(&e);
    if (e.state == kFree && slot == nullptr) slot = &e;
  }
  // CLOCK sweep: an entry looked up since the last pass gets a second chance.
  // Two passes always find one (the first clears every bit it passes).
  for (int step = 0; slot == nullptr && step < 2 * kMaxInstallations; ++step) {
    InstallationEntry& e = state->entries[state->hand];
    state->hand = (state->hand + 1) % kMaxInstallations;
    if (pg_atomic_read_u32(&e.referenced) != 0) {
      pg_atomic_write_u32(&e.referenced, 0);
      continue;
    }
    free_entry(&e);
    slot = &e;
  }
  slot->installation = installation;
  slot->generation = ++state->clock;
  slot->state = kNotLoaded;
  slot->cached = 0;
  pg_atomic_write_u32(&slot->referenced, 1);
  entry_hint = static_cast<int>(slot - state->entries);
  return slot;
}

}  // namespace

SegmentRequest revocation_segment() { return {kSegmentName, segment_bytes(), kTrancheName, 1}; }

void attach_revocation_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  auto* s = static_cast<RevocationShared*>(ShmemInitStruct(kSegmentName, segment_bytes(), &found));
  slots = reinterpret_cast<core::RevocationSlot*>(reinterpret_cast<char*>(s) + header_bytes());
  lock = &GetNamedLWLockTranche(kTrancheName)[0].lock;
  if (!found) {
    s->clock = 0;
    s->hand = 0;
    s->reserved = 0;
    for (InstallationEntry& e : s->entries) {
      e.installation = 0;
      e.generation = 0;
      e.state = kFree;
      e.cached = 0;
      pg_atomic_init_u32(&e.referenced, 0);
    }
    core::RevocationSet::initialize(&s->set, slots, capacity_setting(),
                                    core::revocation_slots_for(capacity_setting()));
  }
  LWLockRelease(AddinShmemInitLock);
  state = s;
}

CacheAnswer probe_revocation_cache(uint64 installation, const core::Hash128& key) noexcept {
  CacheAnswer answer = CacheAnswer::NotLoaded;
  LWLockAcquire(lock, LW_SHARED);
  InstallationEntry* e = find_entry(installation);
  if (e != nullptr && (e->state == kLoaded || e->state == kOverflowed)) {
    // Read before writing: the cache line is written only once per sweep.
    if (pg_atomic_read_u32(&e->referenced) == 0) pg_atomic_write_u32(&e->referenced, 1);
    if (the_set().contains(key))
      answer = CacheAnswer::Revoked;
    else
      answer = e->state == kLoaded ? CacheAnswer::NotRevoked : CacheAnswer::AskTable;
  }
  LWLockRelease(lock);
  return answer;
}

bool begin_revocation_load(uint64 installation, uint64* generation) noexcept {
  LWLockAcquire(lock, LW_EXCLUSIVE);
  InstallationEntry* e = find_or_add_entry(installation);
  const bool needed = e->state == kNotLoaded;
  *generation = e->generation;
  LWLockRelease(lock);
  // The release is a full barrier: the snapshot the caller takes next
  // includes every change that moved the generation up to *generation.
  return needed;
}

bool finish_revocation_load(uint64 installation, uint64 generation, const core::Hash128* keys,
                            std::size_t n) noexcept {
  bool done = true;
  LWLockAcquire(lock, LW_EXCLUSIVE);
  InstallationEntry* e = find_entry(installation);
  if (e == nullptr || (e->state == kNotLoaded && e->generation != generation)) {
    done = false;  // evicted, or a change committed during the load
  } else if (e->state == kNotLoaded) {
    // Installing holds the lock for up to max_revocations inserts: bounded,
    // and only after a start, a TRUNCATE or an overflow.
    core::RevocationSet set = the_set();
    e->state = kLoaded;
    for (std::size_t i = 0; i < n; ++i) {
      const core::InsertResult r = set.insert(keys[i], installation);
      if (r == core::InsertResult::Inserted) ++e->cached;
      if (r == core::InsertResult::Full) {
        e->state = kOverflowed;
        break;
      }
    }
  }
  // Otherwise another backend finished loading first: nothing to do.
  LWLockRelease(lock);
  return done;
}

void apply_revocation_changes(const RevocationChange* changes, int n) noexcept {
  LWLockAcquire(lock, LW_EXCLUSIVE);
  core::RevocationSet set = the_set();
  for (int i = 0; i < n; ++i) {
    const RevocationChange& c = changes[i];
    InstallationEntry* e = find_entry(c.installation);
    if (e == nullptr) continue;  // not cached: it loads from the table when used
    e->generation = ++state->clock;
    if (e->state == kNotLoaded) continue;
    switch (c.kind) {
      case RevocationChangeKind::Reload:
        drop_members(e);
        break;
      case RevocationChangeKind::Insert:
        switch (set.insert(c.key, c.installation)) {
          case core::InsertResult::Inserted:
            ++e->cached;
            break;
          case core::InsertResult::Full:
            e->state = kOverflowed;  // misses ask the table from now on
            break;
          case core::InsertResult::Present:
            drop_members(e);  // already applied through a load: reload to be sure
            break;
        }
        break;
      case RevocationChangeKind::Delete:
        if (e->state == kOverflowed) {
          // Room may have come back: reload, which caches everything if it fits.
          drop_members(e);
        } else if (set.erase(c.key)) {
          --e->cached;
        } else {
          drop_members(e);  // not a member: already applied through a load
        }
        break;
    }
  }
  LWLockRelease(lock);
}

void forget_revocations_of(uint64 installation) noexcept {
  LWLockAcquire(lock, LW_EXCLUSIVE);
  if (InstallationEntry* e = find_entry(installation)) free_entry(e);
  LWLockRelease(lock);
}

RevocationCacheStatus revocation_cache_status(uint64 installation) noexcept {
  RevocationCacheStatus s{"not_loaded", 0, 0, capacity_setting()};
  LWLockAcquire(lock, LW_SHARED);
  if (const InstallationEntry* e = find_entry(installation)) {
    if (e->state == kLoaded) s.state = "loaded";
    if (e->state == kOverflowed) s.state = "overflowed";
    s.cached = e->cached;
  }
  s.cached_total = the_set().count();
  LWLockRelease(lock);
  return s;
}

}  // namespace rate_limiter::pg
