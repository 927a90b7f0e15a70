#include "rate_limiter/core/revocation_set.hpp"

#include "rate_limiter/core/open_addressing.hpp"

namespace rate_limiter::core {

uint32_t revocation_slots_for(uint32_t capacity) noexcept { return capacity + capacity / 3 + 1; }

Hash128 revocation_key(const SipKey& key, uint64_t installation, std::string_view token) noexcept {
  // Framing: installation (8 bytes, little endian), a domain byte that no
  // ScopeKind uses, the token's length (4 bytes), then its bytes.  The
  // installation keeps databases (and successive installations) apart.
  unsigned char header[13];
  for (int i = 0; i < 8; ++i) header[i] = static_cast<unsigned char>(installation >> (8 * i));
  header[8] = 0x52;  // 'R'
  const auto n = static_cast<uint32_t>(token.size());
  for (int i = 0; i < 4; ++i) header[9 + i] = static_cast<unsigned char>(n >> (8 * i));
  SipHasher128 h(key);
  h.update(header, sizeof header);
  h.update(token.data(), token.size());
  Hash128 k = h.finish();
  if (k.is_zero()) k.lo = 1;
  return k;
}

void RevocationSet::initialize(RevocationSetHeader* header, RevocationSlot* slots,
                               uint32_t capacity, uint32_t nslots) noexcept {
  *header = RevocationSetHeader{};
  header->capacity = capacity;
  header->nslots = nslots;
  for (uint32_t i = 0; i < nslots; ++i) slots[i] = RevocationSlot{};
}

uint32_t RevocationSet::home_of(const Hash128& key) const noexcept {
  // Lemire's multiply-shift maps lo uniformly onto [0, nslots).
  return static_cast<uint32_t>((static_cast<unsigned __int128>(key.lo) * header_->nslots) >> 64);
}

int64_t RevocationSet::find_index(const Hash128& key) const noexcept {
  const uint32_t n = header_->nslots;
  for (uint32_t i = home_of(key), probes = 0; probes < n; ++probes, i = next(i)) {
    const RevocationSlot& s = slots_[i];
    if (s.key.is_zero()) return -1;
    if (s.key == key) return i;
  }
  return -1;
}

bool RevocationSet::contains(const Hash128& key) const noexcept { return find_index(key) >= 0; }

InsertResult RevocationSet::insert(const Hash128& key, uint64_t installation) noexcept {
  if (find_index(key) >= 0) return InsertResult::Present;
  if (header_->count >= header_->capacity) return InsertResult::Full;
  uint32_t i = home_of(key);
  while (!slots_[i].key.is_zero()) i = next(i);  // count < nslots: terminates
  slots_[i].key = key;
  slots_[i].installation = installation;
  ++header_->count;
  return InsertResult::Inserted;
}

bool RevocationSet::erase(const Hash128& key) noexcept {
  const int64_t i = find_index(key);
  if (i < 0) return false;
  erase_at(static_cast<uint32_t>(i));
  return true;
}

void RevocationSet::erase_at(uint32_t hole) noexcept {
  backward_shift_erase(slots_, header_->nslots, hole,
                       [this](const Hash128& key) { return home_of(key); });
  --header_->count;
}

uint32_t RevocationSet::erase_installation(uint64_t installation) noexcept {
  // Start the sweep just after an empty slot (one always exists), so that no
  // probe run wraps around the sweep's start.  Backward shifts then only move
  // members within the run being swept, into slots already swept or the
  // current one, which is looked at again.
  const uint32_t n = header_->nslots;
  uint32_t start = 0;
  while (!slots_[start].key.is_zero()) start = next(start);
  uint32_t removed = 0;
  uint32_t i = next(start);
  for (uint32_t visited = 0; visited < n;) {
    RevocationSlot& s = slots_[i];
    if (!s.key.is_zero() && s.installation == installation) {
      erase_at(i);
      ++removed;
      continue;  // another member may have shifted into slot i
    }
    i = next(i);
    ++visited;
  }
  return removed;
}

}  // namespace rate_limiter::core
