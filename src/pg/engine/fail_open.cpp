#include "rate_limiter/pg/engine/fail_open.hpp"

#include <algorithm>

#include "rate_limiter/core/decision.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter fail-open ledger";

struct Entry {
  core::Hash128 key;  // {0,0}: free
  int64 outstanding;  // granted without the lock, not charged yet
};

struct Ledger {
  slock_t lock;
  Entry entries[kFailOpenEntries];
};

Ledger* ledger = nullptr;

Entry* find(const core::Hash128& key) {
  for (Entry& e : ledger->entries)
    if (e.key == key) return &e;
  return nullptr;
}

}  // namespace

SegmentRequest fail_open_segment() { return {kSegmentName, sizeof(Ledger), nullptr, 0}; }

void attach_fail_open_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  ledger = static_cast<Ledger*>(ShmemInitStruct(kSegmentName, sizeof(Ledger), &found));
  if (!found) {
    SpinLockInit(&ledger->lock);
    for (Entry& e : ledger->entries) e = Entry{core::Hash128{}, 0};
  }
  LWLockRelease(AddinShmemInitLock);
}

int64 reserve_fail_open(const core::Hash128* keys, const int64* capacities, int n, uint32 share_ppm,
                        int64 wanted) noexcept {
  int64 granted = wanted;
  SpinLockAcquire(&ledger->lock);
  int free_needed = 0;
  for (int i = 0; i < n; ++i) {
    const Entry* e = find(keys[i]);
    const int64 outstanding = e != nullptr ? e->outstanding : 0;
    if (e == nullptr) ++free_needed;
    granted = Min(granted,
                  core::priority_cap(share_ppm, std::max<int64>(capacities[i] - outstanding, 0)));
  }
  int free_slots = 0;
  for (const Entry& e : ledger->entries) free_slots += e.key.is_zero() ? 1 : 0;
  if (free_slots < free_needed) granted = 0;  // no room to remember it: grant nothing
  if (granted > 0) {
    for (int i = 0; i < n; ++i) {
      Entry* e = find(keys[i]);
      if (e == nullptr) {
        e = find(core::Hash128{});
        e->key = keys[i];
        e->outstanding = 0;
      }
      e->outstanding += granted;
    }
  }
  SpinLockRelease(&ledger->lock);
  return granted;
}

void settle_fail_open(const core::Hash128& key, int64 units) noexcept {
  SpinLockAcquire(&ledger->lock);
  if (Entry* e = find(key)) {
    e->outstanding -= Min(units, e->outstanding);
    if (e->outstanding == 0) e->key = core::Hash128{};
  }
  SpinLockRelease(&ledger->lock);
}

}  // namespace rate_limiter::pg
