#include "rate_limiter/core/lease_table.hpp"

#include <algorithm>
#include <new>

#include "rate_limiter/core/open_addressing.hpp"

namespace rate_limiter::core {
namespace {

constexpr std::size_t align8(std::size_t n) noexcept {
  return (n + 7) & ~static_cast<std::size_t>(7);
}

uint32_t slots_for(uint32_t capacity) noexcept { return 2 * capacity + 1; }

struct Layout {
  std::size_t leases, scopes, grants, total;
};

Layout layout_of(uint32_t capacity) noexcept {
  Layout l{};
  l.leases = align8(sizeof(LeaseTableHeader));
  l.scopes = l.leases + align8(sizeof(Lease) * capacity);
  l.grants = l.scopes + align8(sizeof(LeaseScopeSlot) * slots_for(capacity));
  l.total = l.grants + align8(sizeof(LeaseGrantSlot) * slots_for(capacity));
  return l;
}

}  // namespace

std::size_t LeaseTable::bytes_for(uint32_t capacity) noexcept {
  return layout_of(std::clamp<uint32_t>(capacity, 1, kMaxLeaseCapacity)).total;
}

void LeaseTable::initialize(void* memory, uint32_t capacity) noexcept {
  capacity = std::clamp<uint32_t>(capacity, 1, kMaxLeaseCapacity);
  const Layout l = layout_of(capacity);
  auto* base = static_cast<unsigned char*>(memory);
  new (base) LeaseTableHeader{};
  auto* header = reinterpret_cast<LeaseTableHeader*>(base);
  header->capacity = capacity;
  header->nslots = slots_for(capacity);
  auto* leases = reinterpret_cast<Lease*>(base + l.leases);
  for (uint32_t i = 0; i < capacity; ++i) {
    new (&leases[i]) Lease{};
    leases[i].next = i + 1 < capacity ? static_cast<int32_t>(i + 1) : -1;
  }
  header->free_head = 0;
  auto* scopes = reinterpret_cast<LeaseScopeSlot*>(base + l.scopes);
  auto* grants = reinterpret_cast<LeaseGrantSlot*>(base + l.grants);
  for (uint32_t i = 0; i < header->nslots; ++i) {
    new (&scopes[i]) LeaseScopeSlot{};
    new (&grants[i]) LeaseGrantSlot{};
  }
}

LeaseTable::LeaseTable(void* memory) noexcept {
  auto* base = static_cast<unsigned char*>(memory);
  header_ = reinterpret_cast<LeaseTableHeader*>(base);
  const Layout l = layout_of(header_->capacity);
  leases_ = reinterpret_cast<Lease*>(base + l.leases);
  scopes_ = reinterpret_cast<LeaseScopeSlot*>(base + l.scopes);
  grants_ = reinterpret_cast<LeaseGrantSlot*>(base + l.grants);
}

uint32_t LeaseTable::home(const Hash128& key) const noexcept {
  // Grant keys carry a sequential allocation id in lo: mix before reducing.
  const uint64_t h = (key.lo ^ (key.hi * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
  return static_cast<uint32_t>((h >> 17) % header_->nslots);
}

int64_t LeaseTable::find_scope(const Hash128& key) const noexcept {
  for (uint32_t i = home(key), n = 0; n < header_->nslots; ++n) {
    if (scopes_[i].key.is_zero()) return -1;
    if (scopes_[i].key == key) return i;
    i = i + 1 == header_->nslots ? 0 : i + 1;
  }
  return -1;
}

int64_t LeaseTable::find_grant(const Hash128& key) const noexcept {
  for (uint32_t i = home(key), n = 0; n < header_->nslots; ++n) {
    if (grants_[i].key.is_zero()) return -1;
    if (grants_[i].key == key) return i;
    i = i + 1 == header_->nslots ? 0 : i + 1;
  }
  return -1;
}

int32_t LeaseTable::in_flight(const Hash128& scope) const noexcept {
  const int64_t s = find_scope(scope);
  return s < 0 ? 0 : scopes_[s].in_flight;
}

void LeaseTable::end_lease(int32_t index) noexcept {
  Lease& l = leases_[index];
  const int64_t s = find_scope(l.scope);
  if (s >= 0) {
    LeaseScopeSlot& slot = scopes_[s];
    if (l.prev >= 0)
      leases_[l.prev].next = l.next;
    else
      slot.head = l.next;
    if (l.next >= 0) leases_[l.next].prev = l.prev;
    --slot.in_flight;
    if (l.expires_at <= slot.earliest) slot.earliest = 0;  // it may have held the bound
    if (slot.in_flight <= 0)
      backward_shift_erase(scopes_, header_->nslots, static_cast<uint32_t>(s),
                           [this](const Hash128& k) { return home(k); });
  }
  if (!l.grant.is_zero()) {
    const int64_t g = find_grant(l.grant);
    if (g >= 0) {
      LeaseGrantSlot& slot = grants_[g];
      if (slot.first == index) {
        slot.first = l.next_of_grant;
      } else {
        for (int32_t at = slot.first; at >= 0; at = leases_[at].next_of_grant)
          if (leases_[at].next_of_grant == index) {
            leases_[at].next_of_grant = l.next_of_grant;
            break;
          }
      }
      if (slot.first < 0)
        backward_shift_erase(grants_, header_->nslots, static_cast<uint32_t>(g),
                             [this](const Hash128& k) { return home(k); });
    }
  }
  if (l.expires_at <= header_->earliest) header_->earliest = 0;
  const uint32_t generation = l.generation;
  l = Lease{};
  l.generation = generation;
  l.next = header_->free_head;
  header_->free_head = index;
  --header_->used;
}

void LeaseTable::sweep(uint32_t scope_slot, int64_t now) noexcept {
  const Hash128 key = scopes_[scope_slot].key;
  int32_t at = scopes_[scope_slot].head;
  // end_lease() may erase or move the scope's slot: walk the slab list,
  // which does not move, and find the slot again afterwards.
  while (at >= 0) {
    const int32_t next = leases_[at].next;
    if (leases_[at].expires_at <= now) end_lease(at);
    at = next;
  }
  const int64_t s = find_scope(key);
  if (s < 0) return;
  int64_t earliest = INT64_MAX;
  for (int32_t i = scopes_[s].head; i >= 0; i = leases_[i].next)
    earliest = std::min(earliest, leases_[i].expires_at);
  scopes_[s].earliest = earliest;
}

LeaseRoom LeaseTable::room(const Hash128& scope, int32_t max_in_flight, int64_t now) noexcept {
  LeaseRoom r;
  int64_t s = find_scope(scope);
  if (s >= 0 && scopes_[s].in_flight >= max_in_flight &&
      (scopes_[s].earliest == 0 || now >= scopes_[s].earliest)) {
    sweep(static_cast<uint32_t>(s), now);
    s = find_scope(scope);
  }
  r.in_flight = s < 0 ? 0 : scopes_[s].in_flight;
  r.ok = r.in_flight < max_in_flight;
  if (!r.ok && s >= 0) r.retry_at = scopes_[s].earliest;
  return r;
}

LeaseHandle LeaseTable::take(const Hash128& scope, int64_t now, int64_t expires_at, int32_t owner,
                             int32_t owner_pid, uint32_t group) noexcept {
  LeaseHandle h;
  if (header_->free_head < 0 || scope.is_zero()) return h;
  uint32_t s = home(scope);
  while (!scopes_[s].key.is_zero() && scopes_[s].key != scope)
    s = s + 1 == header_->nslots ? 0 : s + 1;
  LeaseScopeSlot& slot = scopes_[s];
  if (slot.key.is_zero()) {
    slot = LeaseScopeSlot{};
    slot.key = scope;
    slot.earliest = expires_at;
  } else if (slot.earliest != 0) {
    slot.earliest = std::min(slot.earliest, expires_at);
  }
  const int32_t index = header_->free_head;
  Lease& l = leases_[index];
  header_->free_head = l.next;
  const uint32_t generation = l.generation + 1;
  l = Lease{};
  l.generation = generation;
  l.scope = scope;
  l.taken_at = now;
  l.expires_at = expires_at;
  l.owner = owner;
  l.owner_pid = owner_pid;
  l.group = group;
  l.next = slot.head;
  if (slot.head >= 0) leases_[slot.head].prev = index;
  slot.head = index;
  ++slot.in_flight;
  if (header_->used == 0)
    header_->earliest = expires_at;
  else if (header_->earliest != 0)
    header_->earliest = std::min(header_->earliest, expires_at);
  ++header_->used;
  h.index = index;
  h.generation = generation;
  return h;
}

bool LeaseTable::bind(LeaseHandle h, const Hash128& grant) noexcept {
  if (h.index < 0 || static_cast<uint32_t>(h.index) >= header_->capacity || grant.is_zero())
    return false;
  Lease& l = leases_[h.index];
  if (l.scope.is_zero() || l.generation != h.generation || !l.grant.is_zero()) return false;
  uint32_t g = home(grant);
  while (!grants_[g].key.is_zero() && grants_[g].key != grant)
    g = g + 1 == header_->nslots ? 0 : g + 1;
  LeaseGrantSlot& slot = grants_[g];
  if (slot.key.is_zero()) {
    slot = LeaseGrantSlot{};
    slot.key = grant;
  }
  l.grant = grant;
  l.next_of_grant = slot.first;
  slot.first = h.index;
  return true;
}

bool LeaseTable::release(LeaseHandle h) noexcept {
  if (h.index < 0 || static_cast<uint32_t>(h.index) >= header_->capacity) return false;
  const Lease& l = leases_[h.index];
  if (l.scope.is_zero() || l.generation != h.generation) return false;
  end_lease(h.index);
  return true;
}

bool LeaseTable::make_room(uint32_t n, int64_t now, int64_t* retry_at) noexcept {
  if (free_count() >= n) return true;
  if (header_->earliest == 0 || now >= header_->earliest) {
    int64_t earliest = INT64_MAX;
    for (uint32_t i = 0; i < header_->capacity; ++i) {
      const Lease& l = leases_[i];
      if (l.scope.is_zero()) continue;
      if (l.expires_at <= now)
        end_lease(static_cast<int32_t>(i));
      else
        earliest = std::min(earliest, l.expires_at);
    }
    header_->earliest = header_->used > 0 ? earliest : 0;
  }
  if (free_count() >= n) return true;
  *retry_at = header_->earliest;
  return false;
}

int LeaseTable::release_grant(const Hash128& grant) noexcept {
  int n = 0;
  // Each end_lease() removes one lease of the chain (and the slot with the
  // last one); the bound only guards against a corrupted chain.
  for (int64_t g = find_grant(grant);
       g >= 0 && grants_[g].first >= 0 && static_cast<uint32_t>(n) < header_->capacity;
       g = find_grant(grant)) {
    end_lease(grants_[g].first);
    ++n;
  }
  return n;
}

int LeaseTable::release_group(uint32_t group) noexcept {
  int n = 0;
  for (uint32_t i = 0; i < header_->capacity && header_->used > 0; ++i)
    if (!leases_[i].scope.is_zero() && leases_[i].group == group) {
      end_lease(static_cast<int32_t>(i));
      ++n;
    }
  return n;
}

int LeaseTable::release_owner(int32_t owner) noexcept {
  int n = 0;
  for (uint32_t i = 0; i < header_->capacity && header_->used > 0; ++i)
    if (!leases_[i].scope.is_zero() && leases_[i].owner == owner) {
      end_lease(static_cast<int32_t>(i));
      ++n;
    }
  return n;
}

}  // namespace rate_limiter::core
