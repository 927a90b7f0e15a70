// A fixed-capacity hash table of counters, split into partitions.
//
// The PostgreSQL layer places the whole table in one shared-memory segment
// and guards each partition with its own LWLock; this file knows nothing of
// locks.  Every method of CounterPartition must be called with that
// partition's lock held (exclusive for anything that writes).
//
// Layout: each partition is an open-addressing array with linear probing and
// backward-shift deletion (no tombstones), sized for a load factor <= 3/4.
// Keys are 128-bit keyed hashes; {0,0} marks an empty slot.
//
// Capacity: rate_limiter.max_keys is spread over a power-of-two number of
// partitions.  Each partition admits ceil(max_keys / P) keys plus a slack of
// 4 standard deviations of the binomial spread, so a random set of max_keys
// keys fits with high probability; the table reserves that slack on top.
// With one partition (max_keys < 2048) capacity is exactly max_keys.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/types.hpp"
#include "rate_limiter/core/window.hpp"

namespace rate_limiter::core {

struct CounterSlot {
  Hash128 key;         // {0,0}: empty
  CounterState state;  // window_micros == 0: never used
};

// Per-partition bookkeeping, padded to a cache line so that partitions do
// not share one.
struct alignas(64) PartitionHeader {
  uint32_t count = 0;         // occupied slots
  uint32_t capacity = 0;      // the most keys this partition admits
  uint32_t nslots = 0;        // array length, > capacity
  uint32_t reserved = 0;
  // No occupied slot can expire before this instant (expiry_of(), per
  // algorithm), so an eviction scan before it would find nothing.  Lowered
  // whenever a slot is written through acquire() or refund().
  int64_t earliest_expiry = 0;
};

struct TableGeometry {
  uint32_t partitions = 1;          // power of two
  uint32_t capacity_per_partition = 0;
  uint32_t slots_per_partition = 0;

  std::size_t total_slots() const noexcept {
    return static_cast<std::size_t>(partitions) * slots_per_partition;
  }
  std::size_t total_capacity() const noexcept {
    return static_cast<std::size_t>(partitions) * capacity_per_partition;
  }
};

constexpr uint32_t kMaxPartitions = 128;
constexpr uint32_t kKeysPerPartitionTarget = 1024;

TableGeometry geometry_for(uint32_t max_keys) noexcept;

// Which partition a key belongs to: the top bits of hi (slot positions use lo).
uint32_t partition_of(const Hash128& key, uint32_t partitions) noexcept;

class CounterPartition {
 public:
  CounterPartition(PartitionHeader* header, CounterSlot* slots) noexcept
      : header_(header), slots_(slots) {}

  // Formats an empty partition.
  static void initialize(PartitionHeader* header, CounterSlot* slots, uint32_t capacity,
                         uint32_t nslots) noexcept;

  CounterSlot* find(const Hash128& key) noexcept;

  // Finds the key or inserts a slot for it, and brings its state to `now`
  // for `rule` (advance(): a state built for another rule restarts).  The
  // slot returned is therefore live at `now` (state_expired() is false): a
  // later acquire() at the same `now` in the same partition never evicts it.
  // When the partition is at capacity, every expired counter is evicted
  // first.  Eviction shifts other slots backwards, so any CounterSlot
  // pointer obtained earlier from this partition may point elsewhere once
  // acquire() returns: callers that acquire several keys must look them up
  // again with find() after the last acquire() (inserting never moves
  // slots, so find() results are stable until the next acquire()).
  // Returns nullptr when nothing could be evicted: the partition is full of
  // live counters.  *evicted receives the number of slots evicted.
  CounterSlot* acquire(const Hash128& key, const LimitRule& rule, int64_t now,
                       uint32_t* evicted) noexcept;

  // core::refund() on the key's slot, if it exists (returns whether it
  // does), lowering the eviction hint: a bucket refund moves the state's
  // expiry earlier.  Moves no slot.
  // Writes `state` as the key's counter: overwrites an existing slot, or
  // inserts one when the partition has room (expired counters are evicted
  // first, as in acquire()).  For restoring saved or rebuilt counters.
  // Returns false when the key is absent and nothing could be evicted.
  bool store(const Hash128& key, const CounterState& state, int64_t now) noexcept;

  // Restarts the key's counter from nothing (full quota), if it exists;
  // the slot stays and is evictable at once.  Returns whether it existed.
  bool reset(const Hash128& key) noexcept;

  bool refund(const Hash128& key, const LimitRule& rule, int64_t units, int64_t charge_window,
              int64_t now) noexcept;

  // Removes every expired counter; returns how many.
  uint32_t evict_expired(int64_t now) noexcept;


  // Calls fn(const CounterSlot&) for every occupied slot.
  template <typename Fn>
  void for_each(Fn fn) const {
    for (uint32_t i = 0; i < header_->nslots; ++i)
      if (!slots_[i].key.is_zero()) fn(slots_[i]);
  }

  uint32_t count() const noexcept { return header_->count; }
  uint32_t capacity() const noexcept { return header_->capacity; }

 private:
  uint32_t home_of(const Hash128& key) const noexcept;
  // The key's slot, or a new empty one (state fresh) when there is room.
  CounterSlot* find_or_insert(const Hash128& key, int64_t now, uint32_t* evicted) noexcept;
  void erase_at(uint32_t hole) noexcept;
  void note_written(const CounterSlot* slot) noexcept;

  PartitionHeader* header_;
  CounterSlot* slots_;
};

}  // namespace rate_limiter::core
