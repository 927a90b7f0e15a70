// Shared pieces of the open-addressing tables of the core (counter
// partitions, the revocation set): linear probing over a circular array of
// slots whose `key` member is a Hash128, {0,0} marking an empty slot.
#pragma once

#include <cstdint>

#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {

// Backward-shift deletion of slots[hole]: pulls later members of the probe
// run into the hole whenever the hole lies on their probe path, so lookups
// never need tombstones.  home(key) is the slot a key's probe starts at.
// Empties the final hole (Slot{}); the caller adjusts its count.
template <typename Slot, typename HomeFn>
void backward_shift_erase(Slot* slots, uint32_t nslots, uint32_t hole, HomeFn home) noexcept {
  uint32_t j = hole;
  for (;;) {
    j = (j + 1 == nslots ? 0 : j + 1);
    Slot& s = slots[j];
    if (s.key.is_zero()) break;
    const uint32_t h = home(s.key);
    // Distance from home to j and from home to the hole, both circular.
    const uint32_t dist_j = (j + nslots - h) % nslots;
    const uint32_t dist_hole = (hole + nslots - h) % nslots;
    if (dist_hole <= dist_j) {
      slots[hole] = s;
      hole = j;
    }
  }
  slots[hole] = Slot{};
}

}  // namespace rate_limiter::core
