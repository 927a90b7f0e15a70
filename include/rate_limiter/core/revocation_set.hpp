// A fixed-capacity set of revoked tokens, kept as 128-bit keyed hashes.
//
// The PostgreSQL layer places one set in shared memory for the whole cluster
// and guards it with one LWLock; this file knows nothing of locks.  Every
// method must be called with that lock held (exclusive for anything that
// writes).  Nothing here allocates, throws or waits: each operation is a
// bounded loop over the slot array.
//
// Layout: open addressing with linear probing and backward-shift deletion
// (no tombstones), sized for a load factor <= 3/4, like the counter table.
// Each member remembers the installation (database and extension) it
// belongs to, so that one installation's members can be dropped at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {

struct RevocationSlot {
  Hash128 key;  // {0,0}: empty
  uint64_t installation = 0;
};

struct RevocationSetHeader {
  uint32_t count = 0;     // members, over all installations
  uint32_t capacity = 0;  // the most members the set admits
  uint32_t nslots = 0;    // array length, > capacity
  uint32_t reserved = 0;
};

// Slots for a set of `capacity` members: load factor <= 3/4, and always at
// least one empty slot so that every probe ends.
uint32_t revocation_slots_for(uint32_t capacity) noexcept;

// The identity of a revoked token within one installation.  Never {0,0}.
Hash128 revocation_key(const SipKey& key, uint64_t installation, std::string_view token) noexcept;

enum class InsertResult { Inserted, Present, Full };

class RevocationSet {
 public:
  RevocationSet(RevocationSetHeader* header, RevocationSlot* slots) noexcept
      : header_(header), slots_(slots) {}

  // Formats an empty set.
  static void initialize(RevocationSetHeader* header, RevocationSlot* slots, uint32_t capacity,
                         uint32_t nslots) noexcept;

  bool contains(const Hash128& key) const noexcept;
  InsertResult insert(const Hash128& key, uint64_t installation) noexcept;
  bool erase(const Hash128& key) noexcept;  // false when absent
  // Removes every member of one installation; returns how many.
  uint32_t erase_installation(uint64_t installation) noexcept;

  uint32_t count() const noexcept { return header_->count; }
  uint32_t capacity() const noexcept { return header_->capacity; }

 private:
  uint32_t home_of(const Hash128& key) const noexcept;
  uint32_t next(uint32_t i) const noexcept { return i + 1 == header_->nslots ? 0 : i + 1; }
  int64_t find_index(const Hash128& key) const noexcept;  // -1: absent
  void erase_at(uint32_t hole) noexcept;

  RevocationSetHeader* header_;
  RevocationSlot* slots_;
};

}  // namespace rate_limiter::core
