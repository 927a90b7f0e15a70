#include "rate_limiter/pg/rules/rule_table.hpp"

#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter rules";
constexpr const char* kTrancheName = "rate_limiter_rules";
// Optimistic reads before a reader falls back to the shared lock.
constexpr int kOptimisticReads = 4;

// One cache line per partition: the sequence counter and the header.
struct alignas(64) PartitionMeta {
  pg_atomic_uint32 seq;  // odd while a writer is inside
  uint32 reserved;
  core::RulePartitionHeader header;
};

struct RuleTableShared {
  core::TableGeometry geometry;
};

RuleTableShared* table = nullptr;
PartitionMeta* metas = nullptr;
core::RuleSlot* slots = nullptr;
LWLockPadded* locks = nullptr;

core::TableGeometry geometry_setting() {
  return core::geometry_for(static_cast<uint32_t>(settings.max_rules));
}

Size segment_bytes(const core::TableGeometry& g) {
  Size size = MAXALIGN(sizeof(RuleTableShared)) + alignof(PartitionMeta);
  size = add_size(size, mul_size(g.partitions, sizeof(PartitionMeta)));
  size = add_size(size, mul_size(g.total_slots(), sizeof(core::RuleSlot)));
  return size;
}

uint32 partition_of(const core::Hash128& key) {
  return core::partition_of(key, table->geometry.partitions);
}

core::RulePartition partition(uint32 p) {
  return core::RulePartition(&metas[p].header,
                             slots + static_cast<Size>(p) * table->geometry.slots_per_partition);
}

// A writer's critical section on partition p: lock, odd, write, even, unlock.
template <typename Write>
auto write_partition(uint32 p, Write write) {
  LWLockAcquire(&locks[p].lock, LW_EXCLUSIVE);
  pg_atomic_fetch_add_u32(&metas[p].seq, 1);  // a full barrier: the writes follow it
  auto result = write(partition(p));
  pg_atomic_fetch_add_u32(&metas[p].seq, 1);  // ... and precede this one
  LWLockRelease(&locks[p].lock);
  return result;
}

RuleProbe copy_out(const core::RulePartition& part, const core::Hash128& key,
                   core::RuleRecord* out) {
  const core::RuleSlot* s = part.find(key);
  if (s == nullptr) return RuleProbe::Absent;
  *out = s->record;
  return out->deleted ? RuleProbe::Tombstone : RuleProbe::Present;
}

}  // namespace

SegmentRequest rule_table_segment() {
  const core::TableGeometry g = geometry_setting();
  return {kSegmentName, segment_bytes(g), kTrancheName, static_cast<int>(g.partitions)};
}

void attach_rule_table_memory() {
  const core::TableGeometry g = geometry_setting();
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  table = static_cast<RuleTableShared*>(ShmemInitStruct(kSegmentName, segment_bytes(g), &found));
  char* base = reinterpret_cast<char*>(table);
  metas = reinterpret_cast<PartitionMeta*>(
      TYPEALIGN(alignof(PartitionMeta), base + MAXALIGN(sizeof(RuleTableShared))));
  slots = reinterpret_cast<core::RuleSlot*>(metas + g.partitions);
  locks = GetNamedLWLockTranche(kTrancheName);
  if (!found) {
    table->geometry = g;
    for (uint32 p = 0; p < g.partitions; ++p) {
      pg_atomic_init_u32(&metas[p].seq, 0);
      metas[p].reserved = 0;
      core::RulePartition::initialize(&metas[p].header,
                                      slots + static_cast<Size>(p) * g.slots_per_partition,
                                      g.capacity_per_partition, g.slots_per_partition);
    }
  }
  LWLockRelease(AddinShmemInitLock);
}

RuleProbe rule_table_get(const core::Hash128& key, core::RuleRecord* out) noexcept {
  const uint32 p = partition_of(key);
  const core::RulePartition part = partition(p);
  for (int attempt = 0; attempt < kOptimisticReads; ++attempt) {
    const uint32 before = pg_atomic_read_u32(&metas[p].seq);
    if ((before & 1) != 0) {
      pg_spin_delay();
      continue;
    }
    pg_read_barrier();
    // The probe may see a half-written partition; its result is used only
    // when the counter shows that no writer came by.  A probe ends after at
    // most nslots steps whatever it reads.
    core::RuleRecord copy;
    const RuleProbe probe = copy_out(part, key, &copy);
    pg_read_barrier();
    if (pg_atomic_read_u32(&metas[p].seq) == before) {
      if (probe != RuleProbe::Absent) *out = copy;
      return probe;
    }
  }
  LWLockAcquire(&locks[p].lock, LW_SHARED);
  const RuleProbe probe = copy_out(part, key, out);
  LWLockRelease(&locks[p].lock);
  return probe;
}

core::RuleWrite rule_table_upsert(const core::Hash128& key,
                                  const core::RuleRecord& record) noexcept {
  return write_partition(partition_of(key),
                         [&](core::RulePartition part) { return part.upsert(key, record); });
}

core::RuleWrite rule_table_load(const core::Hash128& key, const core::RuleRecord& record,
                                const pg_atomic_uint64* epoch, uint64 expected,
                                bool* stale) noexcept {
  return write_partition(partition_of(key), [&](core::RulePartition part) {
    // pg_atomic_read_u64 takes no const pointer; the read does not write.
    *stale = pg_atomic_read_u64(const_cast<pg_atomic_uint64*>(epoch)) != expected;
    return *stale ? core::RuleWrite::Present : part.insert_if_absent(key, record);
  });
}

bool rule_table_erase(const core::Hash128& key, bool tombstone, bool* no_room) noexcept {
  *no_room = false;
  return write_partition(partition_of(key), [&](core::RulePartition part) {
    const uint32 count_before = part.count();
    const bool removed = part.erase(key, tombstone);
    // A tombstone was wanted but neither an existing slot was marked nor a
    // new one written.
    if (tombstone && !removed && part.count() == count_before && part.find(key) == nullptr)
      *no_room = true;
    return removed;
  });
}

uint64 rule_table_sweep_tag(uint16 tag) noexcept {
  uint64 removed = 0;
  for (uint32 p = 0; p < table->geometry.partitions; ++p)
    removed += write_partition(p, [&](core::RulePartition part) { return part.sweep_tag(tag); });
  return removed;
}

uint64 rule_table_sweep_tombstones(uint16 tag, const pg_atomic_uint64* epoch,
                                   uint64 expected) noexcept {
  uint64 removed = 0;
  for (uint32 p = 0; p < table->geometry.partitions; ++p) {
    // Most partitions hold no tombstone at all after a load: a read of the
    // count (written under the lock; a stale zero only leaves a tombstone,
    // which lookups read as "no rule") spares them the scan and the lock.
    if (metas[p].header.tombstones == 0) continue;
    bool stale = false;
    removed += write_partition(p, [&](core::RulePartition part) -> uint32 {
      // A reset since the load (and a new load under way) owns the
      // tombstones now: they keep the next load from resurrecting a delete.
      stale = pg_atomic_read_u64(const_cast<pg_atomic_uint64*>(epoch)) != expected;
      return stale ? 0 : part.sweep_tombstones(tag);
    });
    if (stale) break;
  }
  return removed;
}

RuleTableStats rule_table_stats() noexcept {
  // Gauges read without the locks (a metrics call must not queue behind
  // writers on every partition): each count is a word written under its
  // partition's lock, so the sum is at worst a moment old.
  RuleTableStats s{0, table->geometry.total_capacity(), 0};
  for (uint32 p = 0; p < table->geometry.partitions; ++p) {
    const core::RulePartitionHeader& h = metas[p].header;
    const uint32 count = *reinterpret_cast<const volatile uint32*>(&h.count);
    const uint32 tombstones = *reinterpret_cast<const volatile uint32*>(&h.tombstones);
    s.live += count >= tombstones ? count - tombstones : 0;
    s.tombstones += tombstones;
  }
  return s;
}

}  // namespace rate_limiter::pg
