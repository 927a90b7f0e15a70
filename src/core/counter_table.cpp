#include "rate_limiter/core/counter_table.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "rate_limiter/core/open_addressing.hpp"

namespace rate_limiter::core {

TableGeometry geometry_for(uint32_t max_keys) noexcept {
  TableGeometry g;
  max_keys = std::max<uint32_t>(max_keys, 1);
  uint32_t p = 1;
  while (p * 2 <= kMaxPartitions && static_cast<uint64_t>(p) * 2 * kKeysPerPartitionTarget <= max_keys)
    p *= 2;
  g.partitions = p;
  const uint64_t per = (static_cast<uint64_t>(max_keys) + p - 1) / p;
  const uint64_t slack = p > 1 ? static_cast<uint64_t>(std::ceil(4.0 * std::sqrt(static_cast<double>(per)))) : 0;
  g.capacity_per_partition = static_cast<uint32_t>(per + slack);
  // Load factor <= 3/4 keeps linear-probe sequences short; +1 so that even a
  // full partition always has an empty slot to end a probe.
  g.slots_per_partition = static_cast<uint32_t>(g.capacity_per_partition + g.capacity_per_partition / 3 + 1);
  return g;
}

uint32_t partition_of(const Hash128& key, uint32_t partitions) noexcept {
  // partitions is a power of two <= 2^31; the top bits of hi are independent
  // of the bits of lo that choose the slot.
  return static_cast<uint32_t>(key.hi >> 32) & (partitions - 1);
}

void CounterPartition::initialize(PartitionHeader* header, CounterSlot* slots, uint32_t capacity,
                                  uint32_t nslots) noexcept {
  *header = PartitionHeader{};
  header->capacity = capacity;
  header->nslots = nslots;
  header->earliest_expiry = std::numeric_limits<int64_t>::max();
  for (uint32_t i = 0; i < nslots; ++i) slots[i] = CounterSlot{};
}

uint32_t CounterPartition::home_of(const Hash128& key) const noexcept {
  // Lemire's multiply-shift maps lo uniformly onto [0, nslots).
  return static_cast<uint32_t>((static_cast<unsigned __int128>(key.lo) * header_->nslots) >> 64);
}

CounterSlot* CounterPartition::find(const Hash128& key) noexcept {
  const uint32_t n = header_->nslots;
  for (uint32_t i = home_of(key), probes = 0; probes < n; ++probes, i = (i + 1 == n ? 0 : i + 1)) {
    CounterSlot& s = slots_[i];
    if (s.key.is_zero()) return nullptr;
    if (s.key == key) return &s;
  }
  return nullptr;
}

CounterSlot* CounterPartition::find_or_insert(const Hash128& key, int64_t now,
                                              uint32_t* evicted) noexcept {
  *evicted = 0;
  CounterSlot* slot = find(key);
  if (slot != nullptr) return slot;
  if (header_->count >= header_->capacity) {
    if (now < header_->earliest_expiry) return nullptr;  // nothing can have expired yet
    *evicted = evict_expired(now);
    if (header_->count >= header_->capacity) return nullptr;
  }
  const uint32_t n = header_->nslots;
  uint32_t i = home_of(key);
  while (!slots_[i].key.is_zero()) i = (i + 1 == n ? 0 : i + 1);  // count < nslots: terminates
  slot = &slots_[i];
  slot->key = key;
  slot->state = CounterState{};
  ++header_->count;
  return slot;
}

CounterSlot* CounterPartition::acquire(const Hash128& key, const LimitRule& rule, int64_t now,
                                       uint32_t* evicted) noexcept {
  CounterSlot* slot = find_or_insert(key, now, evicted);
  if (slot == nullptr) return nullptr;
  slot->state = advance(rule, slot->state, now);
  note_written(slot);
  return slot;
}

bool CounterPartition::store(const Hash128& key, const CounterState& state, int64_t now) noexcept {
  uint32_t evicted = 0;
  CounterSlot* slot = find_or_insert(key, now, &evicted);
  if (slot == nullptr) return false;
  slot->state = state;
  note_written(slot);
  return true;
}

bool CounterPartition::refund(const Hash128& key, const LimitRule& rule, int64_t units,
                              int64_t charge_window, int64_t now) noexcept {
  CounterSlot* slot = find(key);
  if (slot == nullptr) return false;
  core::refund(rule, &slot->state, units, charge_window, now);
  note_written(slot);
  return true;
}

bool CounterPartition::reset(const Hash128& key) noexcept {
  CounterSlot* slot = find(key);
  if (slot == nullptr) return false;
  slot->state = CounterState{};
  note_written(slot);
  return true;
}

void CounterPartition::note_written(const CounterSlot* slot) noexcept {
  header_->earliest_expiry = std::min(header_->earliest_expiry, expiry_of(slot->state));
}

void CounterPartition::erase_at(uint32_t hole) noexcept {
  backward_shift_erase(slots_, header_->nslots, hole,
                       [this](const Hash128& key) { return home_of(key); });
  --header_->count;
}

uint32_t CounterPartition::evict_expired(int64_t now) noexcept {
  uint32_t removed = 0;
  int64_t earliest = std::numeric_limits<int64_t>::max();
  const uint32_t n = header_->nslots;
  for (uint32_t i = 0; i < n;) {
    CounterSlot& s = slots_[i];
    if (!s.key.is_zero() && state_expired(s.state, now)) {
      erase_at(i);
      ++removed;
      continue;  // another key may have shifted into slot i
    }
    if (!s.key.is_zero()) earliest = std::min(earliest, expiry_of(s.state));
    ++i;
  }
  header_->earliest_expiry = earliest;
  return removed;
}

}  // namespace rate_limiter::core
