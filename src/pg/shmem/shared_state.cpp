#include "rate_limiter/pg/shmem/shared_state.hpp"

#include "rate_limiter/pg/shmem/installations.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

SharedState* shared = nullptr;

namespace {

constexpr uint32 kMagic = 0x524c4d31;  // "RLM1"
constexpr const char* kSegmentName = "rate_limiter";
constexpr const char* kTrancheName = "rate_limiter";

// Set in every process by attach_counter_memory().
core::PartitionHeader* partition_headers = nullptr;
core::CounterSlot* counter_slots = nullptr;
LWLockPadded* partition_locks = nullptr;

Size header_bytes() { return MAXALIGN(sizeof(SharedState)); }

// The partition headers are alignas(64); ShmemInitStruct only promises
// MAXALIGN, so the segment keeps room to align them (UBSan found headers at
// addresses like ...a68).
constexpr Size kHeaderAlign = alignof(core::PartitionHeader);

Size segment_bytes(const core::TableGeometry& g) {
  Size size = header_bytes() + kHeaderAlign;
  size = add_size(size, mul_size(g.partitions, sizeof(core::PartitionHeader)));
  size = add_size(size, mul_size(g.total_slots(), sizeof(core::CounterSlot)));
  return size;
}

}  // namespace

SegmentRequest counter_segment() {
  const core::TableGeometry g = core::geometry_for(static_cast<uint32_t>(settings.max_keys));
  return {kSegmentName, segment_bytes(g), kTrancheName, static_cast<int>(g.partitions)};
}

SharedState* attach_counter_memory(bool* created) {
  const core::TableGeometry g = core::geometry_for(static_cast<uint32_t>(settings.max_keys));
  bool found = false;

  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  auto* state = static_cast<SharedState*>(ShmemInitStruct(kSegmentName, segment_bytes(g), &found));
  char* base = reinterpret_cast<char*>(state);
  partition_headers =
      reinterpret_cast<core::PartitionHeader*>(TYPEALIGN(kHeaderAlign, base + header_bytes()));
  counter_slots = reinterpret_cast<core::CounterSlot*>(partition_headers + g.partitions);
  partition_locks = GetNamedLWLockTranche(kTrancheName);

  if (!found) {
    state->magic = kMagic;
    state->geometry = g;
    uint64 key[2] = {0, 0};
    if (!pg_strong_random(key, sizeof key)) {
      // Not fatal: collisions stay improbable, only no longer unplannable.
      key[0] = static_cast<uint64>(GetCurrentTimestamp()) ^ (static_cast<uint64>(MyProcPid) << 32);
      key[1] = key[0] * 0x9e3779b97f4a7c15ULL;
    }
    state->hash_key = core::SipKey{key[0], key[1]};
    SharedMetrics& m = state->metrics;
    for_each_metric_counter(m, [](pg_atomic_uint64* c) { pg_atomic_init_u64(c, 0); });
    pg_atomic_init_u64(&m.keys_in_use, 0);
    pg_atomic_init_u64(&m.latency.ewma_fixed, 0);
    for (pg_atomic_uint64& b : m.latency.buckets) pg_atomic_init_u64(&b, 0);
    for (uint32 p = 0; p < g.partitions; ++p) {
      core::CounterPartition::initialize(
          &partition_headers[p], counter_slots + static_cast<Size>(p) * g.slots_per_partition,
          g.capacity_per_partition, g.slots_per_partition);
    }
  }
  LWLockRelease(AddinShmemInitLock);
  *created = !found;
  return state;
}

void require_shared_state() {
  if (shared == nullptr)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("rate_limiter must be loaded via shared_preload_libraries"),
                    errhint("Add 'rate_limiter' to shared_preload_libraries in postgresql.conf "
                            "and restart the server.")));
}

core::Hash128 installation_scope(uint64 installation, uint16 tag, core::ScopeKind scope,
                                 std::string_view user, std::string_view endpoint) noexcept {
  return core::with_tag(core::scope_hash(shared->hash_key, installation, scope, user, endpoint),
                        tag);
}

core::CounterPartition counter_partition(uint32 partition) {
  return core::CounterPartition(
      &partition_headers[partition],
      counter_slots + static_cast<Size>(partition) * shared->geometry.slots_per_partition,
      installation_tag_live());
}

LWLock* partition_lock(uint32 partition) { return &partition_locks[partition].lock; }

}  // namespace rate_limiter::pg
