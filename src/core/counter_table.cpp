#include "rate_limiter/core/counter_table.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "rate_limiter/core/open_addressing.hpp"
#include "rate_limiter/core/scope_key.hpp"

namespace rate_limiter::core {

TableGeometry geometry_for(uint32_t max_keys) noexcept {
  TableGeometry g;
  max_keys = std::max<uint32_t>(max_keys, 1);
  uint32_t p = 1;
  while (p * 2 <= kMaxPartitions &&
         static_cast<uint64_t>(p) * 2 * kKeysPerPartitionTarget <= max_keys)
    p *= 2;
  g.partitions = p;
  const uint64_t per = (static_cast<uint64_t>(max_keys) + p - 1) / p;
  const uint64_t slack =
      p > 1 ? static_cast<uint64_t>(std::ceil(4.0 * std::sqrt(static_cast<double>(per)))) : 0;
  g.capacity_per_partition = static_cast<uint32_t>(per + slack);
  // Load factor <= 3/4 keeps linear-probe sequences short; +1 so that even a
  // full partition always has an empty slot to end a probe.
  g.slots_per_partition =
      static_cast<uint32_t>(g.capacity_per_partition + g.capacity_per_partition / 3 + 1);
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

bool CounterPartition::admits(const Admission& a, AcquireStatus* status) const noexcept {
  if (header_->count >= header_->capacity) {
    *status = AcquireStatus::TableFull;
    return false;
  }
  if (a.owner == kConfiguredOwner) return true;
  if (header_->default_count >= a.class_cap) {
    *status = AcquireStatus::ClassFull;
    return false;
  }
  if (a.owner <= kMaxOwners && header_->owner_count[a.owner] >= a.owner_cap) {
    *status = AcquireStatus::OwnerFull;
    return false;
  }
  return true;
}

CounterSlot* CounterPartition::find_or_insert(const Hash128& key, int64_t now,
                                              const Admission& admission, uint32_t* evicted,
                                              AcquireStatus* status) noexcept {
  *evicted = 0;
  *status = AcquireStatus::Ok;
  CounterSlot* slot = find(key);
  if (slot != nullptr) return slot;
  if (!admits(admission, status)) {
    // Expired counters make room, for the table as for a class or an
    // owner; a scan also takes counters of dropped installations that were
    // written after their installation's sweep (rare: sweep_tag() takes
    // the rest at the drop).  Nothing can have expired before
    // earliest_expiry, which spares a full partition one scan per call.
    if (now < header_->earliest_expiry) return nullptr;
    *evicted = evict_expired(now);
    *status = AcquireStatus::Ok;
    if (!admits(admission, status)) return nullptr;
  }
  const uint32_t n = header_->nslots;
  uint32_t i = home_of(key);
  while (!slots_[i].key.is_zero()) i = (i + 1 == n ? 0 : i + 1);  // count < nslots: terminates
  slot = &slots_[i];
  slot->key = key;
  slot->state = CounterState{};
  const uint8_t owner = admission.owner <= kMaxOwners ? admission.owner : kConfiguredOwner;
  slot->state.reserved[0] = owner;
  set_generation(&slot->state, next_generation());
  ++header_->count;
  if (owner != kConfiguredOwner) {
    ++header_->default_count;
    ++header_->owner_count[owner];
  }
  return slot;
}

CounterSlot* CounterPartition::acquire(const Hash128& key, const LimitRule& rule, int64_t now,
                                       uint32_t* evicted) noexcept {
  AcquireStatus status;
  return acquire(key, rule, now, Admission{}, evicted, &status);
}

CounterSlot* CounterPartition::acquire(const Hash128& key, const LimitRule& rule, int64_t now,
                                       const Admission& admission, uint32_t* evicted,
                                       AcquireStatus* status) noexcept {
  CounterSlot* slot = find_or_insert(key, now, admission, evicted, status);
  if (slot == nullptr) return nullptr;
  const uint8_t owner = owner_of(*slot);
  const uint16_t generation = generation_of(*slot);
  slot->state = advance(rule, slot->state, now);
  slot->state.reserved[0] = owner;
  set_generation(&slot->state, generation);
  note_written(slot);
  return slot;
}

bool CounterPartition::store(const Hash128& key, const CounterState& state, int64_t now,
                             uint8_t owner) noexcept {
  uint32_t evicted = 0;
  AcquireStatus status;
  Admission admission;
  admission.owner = owner;
  CounterSlot* slot = find_or_insert(key, now, admission, &evicted, &status);
  if (slot == nullptr) return false;
  const uint8_t kept = owner_of(*slot);
  slot->state = state;
  slot->state.reserved[0] = kept;
  // Generations handed out later must differ from the restored ones (the
  // clock itself is not saved with the counters).
  const uint16_t generation = generation_of(state);
  if (generation != kRebuiltGeneration && generation > header_->generation_clock)
    header_->generation_clock = generation;
  note_written(slot);
  return true;
}

bool CounterPartition::refund(const Hash128& key, const LimitRule& rule, int64_t units,
                              int64_t charge_window, int64_t now, uint16_t generation) noexcept {
  CounterSlot* slot = find(key);
  if (slot == nullptr) return false;
  if (generation_of(*slot) != generation) return true;  // reset or made again since the charge
  const uint8_t owner = owner_of(*slot);
  core::refund(rule, &slot->state, units, charge_window, now);
  slot->state.reserved[0] = owner;
  set_generation(&slot->state, generation);
  note_written(slot);
  return true;
}

bool CounterPartition::reset(const Hash128& key) noexcept {
  CounterSlot* slot = find(key);
  if (slot == nullptr) return false;
  const uint8_t owner = owner_of(*slot);
  slot->state = CounterState{};
  slot->state.reserved[0] = owner;
  set_generation(&slot->state, next_generation());
  note_written(slot);
  return true;
}

uint16_t CounterPartition::next_generation() noexcept {
  // 0 .. 0xFFFE: kRebuiltGeneration is never handed out.
  header_->generation_clock =
      static_cast<uint16_t>((header_->generation_clock + 1) % kRebuiltGeneration);
  return header_->generation_clock;
}

void CounterPartition::note_written(const CounterSlot* slot) noexcept {
  header_->earliest_expiry = std::min(header_->earliest_expiry, expiry_of(slot->state));
}

void CounterPartition::erase_at(uint32_t hole) noexcept {
  const uint8_t owner = owner_of(slots_[hole]);
  if (owner != kConfiguredOwner && owner <= kMaxOwners) {
    --header_->default_count;
    --header_->owner_count[owner];
  }
  backward_shift_erase(slots_, header_->nslots, hole,
                       [this](const Hash128& key) { return home_of(key); });
  --header_->count;
}

bool CounterPartition::reclaimable(const CounterSlot& s, int64_t now) const noexcept {
  if (state_expired(s.state, now)) return true;
  return tag_live_ != nullptr && tag_live_[tag_of(s.key)] == 0;
}

uint32_t CounterPartition::evict_expired(int64_t now) noexcept {
  uint32_t removed = 0;
  int64_t earliest = std::numeric_limits<int64_t>::max();
  const uint32_t n = header_->nslots;
  for (uint32_t i = 0; i < n;) {
    CounterSlot& s = slots_[i];
    if (!s.key.is_zero() && reclaimable(s, now)) {
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

uint32_t CounterPartition::sweep_tag(uint16_t tag) noexcept {
  uint32_t removed = 0;
  const uint32_t n = header_->nslots;
  for (uint32_t i = 0; i < n;) {
    CounterSlot& s = slots_[i];
    if (!s.key.is_zero() && tag_of(s.key) == tag) {
      erase_at(i);
      ++removed;
      continue;
    }
    ++i;
  }
  return removed;
}

}  // namespace rate_limiter::core
