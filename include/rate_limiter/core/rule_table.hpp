// A fixed-capacity hash table of rules (rows of token_limits and
// request_limits), split into partitions like the counter table.
//
// The PostgreSQL layer keeps one such table in shared memory for every
// installation of the extension on the server (rule_table.hpp there), so
// that a backend finds a rule with a hash probe instead of loading every
// rule into its own memory.  This file knows nothing of locks or of how
// readers synchronise with writers; every method must be called with the
// partition's writer lock held (or, for find(), under whatever read
// protocol the caller implements).
//
// A rule is keyed by counter_key(scope, kind): the tagged scope hash of its
// user/endpoint (scope_key.hpp) with its limit kind folded in.  Layout: open
// addressing with linear probing and backward-shift deletion, load factor
// <= 3/4, as in counter_table.hpp.
//
// Tombstones: while an installation's rules are being loaded from the
// tables, a committed delete leaves a record marked `deleted` instead of
// removing it, so that the loader (which inserts only absent keys) cannot
// bring back a rule deleted after its snapshot.  sweep_tombstones() removes
// them once the load is over; lookups treat a tombstone as "no rule".
#pragma once

#include <cstdint>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {

// One rule row, compact and trivially copyable.  Option fields use -1 for
// SQL NULL ("use the setting"); the PostgreSQL layer converts to and from
// its richer form (rules.hpp).
struct RuleRecord {
  int64_t limit = 0;
  int64_t window_micros = 0;
  int64_t burst = 0;                 // token_bucket capacity / gcra max_burst
  int64_t cap_limit = 0;             // burst cap (burst_limit); 0: none
  int64_t burst_window_micros = -1;  // burst mode window
  int64_t max_burst_tokens = -1;
  int32_t cap_window_s = 0;  // burst cap window (burst_window_seconds)
  // user_history_weight, system_load_weight, time_factor_weight,
  // emergency_threshold, override_percentage, burst_multiplier (ppm).
  int32_t ppm[6] = {-1, -1, -1, -1, -1, -1};
  uint8_t algorithm = 0;   // Algorithm
  int8_t dynamic = -1;     // enable_dynamic_allocation
  int8_t emergency = -1;   // emergency_override_enabled
  int8_t burst_mode = -1;  // burst_mode_enabled
  int8_t shadow = -1;      // shadow_mode
  uint8_t kind = 0;        // LimitKind
  uint8_t deleted = 0;     // tombstone (see above)
  uint8_t reserved = 0;
  // Calendar periods (the PostgreSQL layer's calendar_rules.hpp): the
  // window's months and days (the rest of window_micros is its time part),
  // the period_anchor (microseconds since the Unix epoch; kNoAnchor: the
  // default) and the period_timezone (an id of the PostgreSQL layer's zone
  // registry; 0: UTC).
  int32_t period_months = 0;
  int32_t period_days = 0;
  int64_t period_anchor = INT64_MIN;
  uint16_t period_zone = 0;
};

struct RuleSlot {
  Hash128 key;  // {0,0}: empty
  RuleRecord record;
};

struct RulePartitionHeader {
  uint32_t count = 0;     // occupied slots (tombstones included)
  uint32_t capacity = 0;  // the most records this partition admits
  uint32_t nslots = 0;    // array length, > capacity
  uint32_t tombstones = 0;
};

enum class RuleWrite : uint8_t { Inserted, Updated, Present, Full };

class RulePartition {
 public:
  RulePartition(RulePartitionHeader* header, RuleSlot* slots) noexcept
      : header_(header), slots_(slots) {}

  static void initialize(RulePartitionHeader* header, RuleSlot* slots, uint32_t capacity,
                         uint32_t nslots) noexcept;

  // The key's slot (a tombstone included), or nullptr.
  const RuleSlot* find(const Hash128& key) const noexcept;

  // Writes the record (a tombstone of the key is replaced).  Inserted,
  // Updated or Full.
  RuleWrite upsert(const Hash128& key, const RuleRecord& record) noexcept;
  // Inserts only when the key has no slot at all (not even a tombstone):
  // Inserted, Present or Full.  The loader's write.
  RuleWrite insert_if_absent(const Hash128& key, const RuleRecord& record) noexcept;
  // Removes the key; with `tombstone`, marks it deleted instead (inserting
  // a tombstone when absent, if there is room).  Returns whether a live
  // record was removed.
  bool erase(const Hash128& key, bool tombstone) noexcept;

  // Removes every slot whose key carries `tag`; returns how many were live.
  uint32_t sweep_tag(uint16_t tag) noexcept;
  // Removes the tombstones of `tag`; returns how many.
  uint32_t sweep_tombstones(uint16_t tag) noexcept;

  uint32_t count() const noexcept { return header_->count; }
  uint32_t live() const noexcept { return header_->count - header_->tombstones; }
  uint32_t capacity() const noexcept { return header_->capacity; }

 private:
  uint32_t home_of(const Hash128& key) const noexcept;
  int64_t find_index(const Hash128& key) const noexcept;
  RuleSlot* insert_new(const Hash128& key) noexcept;  // count < capacity
  void erase_at(uint32_t hole) noexcept;

  RulePartitionHeader* header_;
  RuleSlot* slots_;
};

}  // namespace rate_limiter::core
