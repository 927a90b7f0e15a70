#include "rate_limiter/core/rule_table.hpp"

#include "rate_limiter/core/open_addressing.hpp"
#include "rate_limiter/core/scope_key.hpp"

namespace rate_limiter::core {

void RulePartition::initialize(RulePartitionHeader* header, RuleSlot* slots, uint32_t capacity,
                               uint32_t nslots) noexcept {
  *header = RulePartitionHeader{};
  header->capacity = capacity;
  header->nslots = nslots;
  for (uint32_t i = 0; i < nslots; ++i) slots[i] = RuleSlot{};
}

uint32_t RulePartition::home_of(const Hash128& key) const noexcept {
  return static_cast<uint32_t>((static_cast<unsigned __int128>(key.lo) * header_->nslots) >> 64);
}

int64_t RulePartition::find_index(const Hash128& key) const noexcept {
  const uint32_t n = header_->nslots;
  for (uint32_t i = home_of(key), probes = 0; probes < n; ++probes, i = (i + 1 == n ? 0 : i + 1)) {
    const RuleSlot& s = slots_[i];
    if (s.key.is_zero()) return -1;
    if (s.key == key) return i;
  }
  return -1;
}

const RuleSlot* RulePartition::find(const Hash128& key) const noexcept {
  const int64_t i = find_index(key);
  return i < 0 ? nullptr : &slots_[i];
}

RuleSlot* RulePartition::insert_new(const Hash128& key) noexcept {
  const uint32_t n = header_->nslots;
  uint32_t i = home_of(key);
  while (!slots_[i].key.is_zero()) i = (i + 1 == n ? 0 : i + 1);  // count < nslots: terminates
  slots_[i].key = key;
  ++header_->count;
  return &slots_[i];
}

RuleWrite RulePartition::upsert(const Hash128& key, const RuleRecord& record) noexcept {
  const int64_t i = find_index(key);
  if (i >= 0) {
    RuleSlot& s = slots_[i];
    if (s.record.deleted) --header_->tombstones;
    const bool was_live = !s.record.deleted;
    s.record = record;
    s.record.deleted = 0;
    return was_live ? RuleWrite::Updated : RuleWrite::Inserted;
  }
  if (header_->count >= header_->capacity) {
    // A tombstone of another key can make room only at the end of a load;
    // until then the write is Full (the caller falls back to the table).
    return RuleWrite::Full;
  }
  RuleSlot* s = insert_new(key);
  s->record = record;
  s->record.deleted = 0;
  return RuleWrite::Inserted;
}

RuleWrite RulePartition::insert_if_absent(const Hash128& key, const RuleRecord& record) noexcept {
  if (find_index(key) >= 0) return RuleWrite::Present;
  if (header_->count >= header_->capacity) return RuleWrite::Full;
  RuleSlot* s = insert_new(key);
  s->record = record;
  s->record.deleted = 0;
  return RuleWrite::Inserted;
}

bool RulePartition::erase(const Hash128& key, bool tombstone) noexcept {
  const int64_t i = find_index(key);
  if (i < 0) {
    if (tombstone && header_->count < header_->capacity) {
      RuleSlot* s = insert_new(key);
      s->record = RuleRecord{};
      s->record.deleted = 1;
      ++header_->tombstones;
    }
    return false;
  }
  RuleSlot& s = slots_[i];
  const bool was_live = !s.record.deleted;
  if (tombstone) {
    if (was_live) {
      s.record.deleted = 1;
      ++header_->tombstones;
    }
  } else {
    erase_at(static_cast<uint32_t>(i));
  }
  return was_live;
}

void RulePartition::erase_at(uint32_t hole) noexcept {
  if (slots_[hole].record.deleted) --header_->tombstones;
  backward_shift_erase(slots_, header_->nslots, hole,
                       [this](const Hash128& key) { return home_of(key); });
  --header_->count;
}

uint32_t RulePartition::sweep_tag(uint16_t tag) noexcept {
  uint32_t removed = 0;
  for (uint32_t i = 0; i < header_->nslots;) {
    const RuleSlot& s = slots_[i];
    if (!s.key.is_zero() && tag_of(s.key) == tag) {
      if (!s.record.deleted) ++removed;
      erase_at(i);
      continue;  // another key may have shifted into slot i
    }
    ++i;
  }
  return removed;
}

uint32_t RulePartition::sweep_tombstones(uint16_t tag) noexcept {
  uint32_t removed = 0;
  for (uint32_t i = 0; i < header_->nslots;) {
    const RuleSlot& s = slots_[i];
    if (!s.key.is_zero() && s.record.deleted && tag_of(s.key) == tag) {
      erase_at(i);
      ++removed;
      continue;
    }
    ++i;
  }
  return removed;
}

}  // namespace rate_limiter::core
