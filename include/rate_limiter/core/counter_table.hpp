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
//
// Exhaustion policy (docs/production-scale.md, "Counter table exhaustion"): a new counter is
// admitted under an Admission.  Counters of scopes with a rule of their own
// ("configured") may use the whole partition.  Counters made for users who
// are only under the default rule ("default class") are limited to
// class_cap per partition, and those made on behalf of one owner (the
// PostgreSQL layer's tally of the calling role) to owner_cap.  The owner is
// remembered in the slot, so the tallies go down when the slot is evicted.
//
// Reclaim: every key carries its installation's tag (scope_key.hpp).
// sweep_tag() removes one installation's slots; slots whose tag the
// optional tag map marks dead are evicted like expired ones.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/types.hpp"
#include "rate_limiter/core/window.hpp"

namespace rate_limiter::core {

struct CounterSlot {
  Hash128 key;  // {0,0}: empty
  // window_micros == 0: never used.  state.reserved[0] is the slot's owner,
  // reserved[1..2] its generation (below); CounterPartition keeps both
  // across every rewrite of the state.
  CounterState state;
};

// A slot's generation tells a refund whether the counter still holds the
// charge it was recorded with.  A slot takes a new generation from its
// partition's clock when it is created and when it is reset, so a refund
// recorded before a reset (or before the slot was evicted and made again)
// finds another generation and gives nothing back.  The clock has 65535
// values: a refund could only be misled when exactly a multiple of 65535
// slots were created or reset in that partition between its charge and its
// settle and the slot's window is still the charge's; the PostgreSQL layer
// also skips refunds of charges made before a committed reset of their
// scope (rate_limit_resets), which covers that.  Counters restored from a
// rebuild take kRebuiltGeneration, which the clock never hands out: a
// rebuilt counter takes no refund of a charge made before it was rebuilt
// (it holds the rows as they are, not the live charges).  Charges made on
// a rebuilt counter record kRebuiltGeneration and are refunded; after a
// second rebuild such a refund may reach the new rebuilt counter, which
// holds that charge's row.
constexpr uint16_t kRebuiltGeneration = 0xFFFF;

// Owner tallies per partition.  Owner 0 is the configured class (no tally);
// 1 .. kMaxOwners are default-class owners (the PostgreSQL layer maps roles
// onto them).
constexpr uint8_t kConfiguredOwner = 0;
constexpr int kMaxOwners = 63;

// How a new counter is admitted; see the exhaustion policy above.
struct Admission {
  uint8_t owner = kConfiguredOwner;
  uint32_t class_cap = UINT32_MAX;  // default-class counters this partition admits
  uint32_t owner_cap = UINT32_MAX;  // ... of which one owner may hold
};

enum class AcquireStatus : uint8_t {
  Ok,
  TableFull,  // the partition is full of live counters
  ClassFull,  // the default class is at class_cap (live counters only)
  OwnerFull,  // the owner is at owner_cap (live counters only)
};

// Per-partition bookkeeping, padded to a cache line so that partitions do
// not share one.
struct alignas(64) PartitionHeader {
  uint32_t count = 0;          // occupied slots
  uint32_t capacity = 0;       // the most keys this partition admits
  uint32_t nslots = 0;         // array length, > capacity
  uint32_t default_count = 0;  // occupied slots of the default class (owner != 0)
  // No occupied slot can expire before this instant (expiry_of(), per
  // algorithm), so an eviction scan before it would find nothing.  Lowered
  // whenever a slot is written through acquire() or refund().
  int64_t earliest_expiry = 0;
  uint32_t owner_count[kMaxOwners + 1] = {};  // occupied slots per owner; [0] unused
  uint16_t generation_clock = 0;              // the last generation handed out (CounterSlot)
};

struct TableGeometry {
  uint32_t partitions = 1;  // power of two
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
  // tag_live (optional, 65536 bytes): tag_live[t] == 0 marks tag t dead,
  // and its slots reclaimable.
  CounterPartition(PartitionHeader* header, CounterSlot* slots,
                   const volatile uint8_t* tag_live = nullptr) noexcept
      : header_(header), slots_(slots), tag_live_(tag_live) {}

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
  // The same under an Admission (a new key only; an existing key is always
  // served).  *status tells why nullptr was returned.
  CounterSlot* acquire(const Hash128& key, const LimitRule& rule, int64_t now,
                       const Admission& admission, uint32_t* evicted,
                       AcquireStatus* status) noexcept;

  // core::refund() on the key's slot, if it exists (returns whether it
  // does), lowering the eviction hint: a bucket refund moves the state's
  // expiry earlier.  Moves no slot.
  // Writes `state` as the key's counter: overwrites an existing slot, or
  // inserts one when the partition has room (expired counters are evicted
  // first, as in acquire()).  For restoring saved or rebuilt counters: the
  // slot takes the generation `state` carries (a saved counter its own, a
  // rebuilt one kRebuiltGeneration, see set_generation()).
  // Returns false when the key is absent and nothing could be evicted.
  // `owner` is the slot's owner when it is inserted (no caps apply).
  bool store(const Hash128& key, const CounterState& state, int64_t now,
             uint8_t owner = kConfiguredOwner) noexcept;

  // Restarts the key's counter from nothing (full quota), if it exists;
  // the slot stays and is evictable at once, with a new generation.
  // Returns whether it existed.
  bool reset(const Hash128& key) noexcept;

  // Only when the slot is still at `generation` (the generation the charge
  // was made at, CounterSlot): otherwise the counter no longer holds the
  // charge and nothing is given back.
  bool refund(const Hash128& key, const LimitRule& rule, int64_t units, int64_t charge_window,
              int64_t now, uint16_t generation) noexcept;

  // Removes every expired counter, and every counter of a dead tag;
  // returns how many.
  uint32_t evict_expired(int64_t now) noexcept;

  // Removes every counter whose key carries `tag`; returns how many.
  uint32_t sweep_tag(uint16_t tag) noexcept;

  static uint8_t owner_of(const CounterSlot& slot) noexcept { return slot.state.reserved[0]; }
  static uint16_t generation_of(const CounterState& state) noexcept {
    return static_cast<uint16_t>(state.reserved[1] | (state.reserved[2] << 8));
  }
  static uint16_t generation_of(const CounterSlot& slot) noexcept {
    return generation_of(slot.state);
  }
  static void set_generation(CounterState* state, uint16_t generation) noexcept {
    state->reserved[1] = static_cast<uint8_t>(generation & 0xFF);
    state->reserved[2] = static_cast<uint8_t>(generation >> 8);
  }

  // Calls fn(const CounterSlot&) for every occupied slot.
  template <typename Fn>
  void for_each(Fn fn) const {
    for (uint32_t i = 0; i < header_->nslots; ++i)
      if (!slots_[i].key.is_zero()) fn(slots_[i]);
  }

  uint32_t count() const noexcept { return header_->count; }
  uint32_t capacity() const noexcept { return header_->capacity; }
  uint32_t default_count() const noexcept { return header_->default_count; }
  uint32_t owner_count(uint8_t owner) const noexcept {
    return owner <= kMaxOwners ? header_->owner_count[owner] : 0;
  }

 private:
  uint32_t home_of(const Hash128& key) const noexcept;
  // The key's slot, or a new empty one (state fresh, owned by
  // admission.owner) when the admission allows it.
  CounterSlot* find_or_insert(const Hash128& key, int64_t now, const Admission& admission,
                              uint32_t* evicted, AcquireStatus* status) noexcept;
  bool admits(const Admission& admission, AcquireStatus* status) const noexcept;
  uint16_t next_generation() noexcept;
  bool reclaimable(const CounterSlot& slot, int64_t now) const noexcept;
  void erase_at(uint32_t hole) noexcept;
  void note_written(const CounterSlot* slot) noexcept;

  PartitionHeader* header_;
  CounterSlot* slots_;
  const volatile uint8_t* tag_live_;
};

}  // namespace rate_limiter::core
