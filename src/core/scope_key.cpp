#include "rate_limiter/core/scope_key.hpp"

namespace rate_limiter::core {
namespace {

constexpr uint64_t rotl(uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }

inline void sip_round(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) noexcept {
  v0 += v1;
  v1 = rotl(v1, 13);
  v1 ^= v0;
  v0 = rotl(v0, 32);
  v2 += v3;
  v3 = rotl(v3, 16);
  v3 ^= v2;
  v0 += v3;
  v3 = rotl(v3, 21);
  v3 ^= v0;
  v2 += v1;
  v1 = rotl(v1, 17);
  v1 ^= v2;
  v2 = rotl(v2, 32);
}

}  // namespace

SipHasher128::SipHasher128(const SipKey& key) noexcept
    : v0_(key.k0 ^ 0x736f6d6570736575ULL),
      v1_(key.k1 ^ 0x646f72616e646f6dULL ^ 0xeeULL),  // 0xee: 128-bit output variant
      v2_(key.k0 ^ 0x6c7967656e657261ULL),
      v3_(key.k1 ^ 0x7465646279746573ULL) {}

void SipHasher128::compress(uint64_t m) noexcept {
  v3_ ^= m;
  sip_round(v0_, v1_, v2_, v3_);
  sip_round(v0_, v1_, v2_, v3_);
  v0_ ^= m;
}

void SipHasher128::update(const void* data, std::size_t len) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += len;
  while (len > 0) {
    tail_ |= static_cast<uint64_t>(*p) << (8 * ntail_);
    ++p;
    --len;
    if (++ntail_ == 8) {
      compress(tail_);
      tail_ = 0;
      ntail_ = 0;
    }
  }
}

Hash128 SipHasher128::finish() noexcept {
  compress(tail_ | (static_cast<uint64_t>(total_ & 0xff) << 56));
  v2_ ^= 0xee;
  for (int i = 0; i < 4; ++i) sip_round(v0_, v1_, v2_, v3_);
  Hash128 out;
  out.lo = v0_ ^ v1_ ^ v2_ ^ v3_;
  v1_ ^= 0xdd;
  for (int i = 0; i < 4; ++i) sip_round(v0_, v1_, v2_, v3_);
  out.hi = v0_ ^ v1_ ^ v2_ ^ v3_;
  return out;
}

Hash128 siphash128(const SipKey& key, const void* data, std::size_t len) noexcept {
  SipHasher128 h(key);
  h.update(data, len);
  return h.finish();
}

Hash128 scope_hash(const SipKey& key, uint64_t installation, ScopeKind scope, std::string_view user,
                   std::string_view endpoint) noexcept {
  // A user+endpoint scope is derived from the user's scope, so that an
  // ancestor's (known by its scope hash only, hierarchy.hpp) can be found.
  if (scope == ScopeKind::UserEndpoint)
    return user_endpoint_scope(key, installation,
                               scope_hash(key, installation, ScopeKind::User, user, {}), endpoint);
  // Fixed-width little-endian framing: installation (8), scope (1), then
  // each string as a 4-byte length followed by its bytes.
  unsigned char header[9];
  for (int i = 0; i < 8; ++i) header[i] = static_cast<unsigned char>(installation >> (8 * i));
  header[8] = static_cast<unsigned char>(scope);
  SipHasher128 h(key);
  h.update(header, sizeof header);
  for (std::string_view part : {user, endpoint}) {
    const auto n = static_cast<uint32_t>(part.size());
    unsigned char len[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                            static_cast<unsigned char>(n >> 16),
                            static_cast<unsigned char>(n >> 24)};
    h.update(len, sizeof len);
    h.update(part.data(), part.size());
  }
  return h.finish();
}

Hash128 user_endpoint_scope(const SipKey& key, uint64_t installation, const Hash128& user_scope,
                            std::string_view endpoint) noexcept {
  // installation (8), scope (1), the user scope without its tag (16), then
  // the endpoint as a 4-byte length and its bytes.
  const Hash128 user = with_tag(user_scope, 0);
  unsigned char header[9 + 16 + 4];
  for (int i = 0; i < 8; ++i) header[i] = static_cast<unsigned char>(installation >> (8 * i));
  header[8] = static_cast<unsigned char>(ScopeKind::UserEndpoint);
  for (int i = 0; i < 8; ++i) {
    header[9 + i] = static_cast<unsigned char>(user.hi >> (8 * i));
    header[17 + i] = static_cast<unsigned char>(user.lo >> (8 * i));
  }
  const auto n = static_cast<uint32_t>(endpoint.size());
  for (int i = 0; i < 4; ++i) header[25 + i] = static_cast<unsigned char>(n >> (8 * i));
  SipHasher128 h(key);
  h.update(header, sizeof header);
  h.update(endpoint.data(), endpoint.size());
  return h.finish();
}

Hash128 counter_key(const Hash128& scope, LimitKind kind, CounterRole role) noexcept {
  // XOR of the low half with one constant per kind and one per role.  The
  // fourteen combinations kind ^ role are distinct (and none of their pairwise
  // XORs is 1, which the {0,0} remapping below relies on; both checked in
  // scope_key_test), so the keys of one scope never collide; across scopes
  // a collision needs a 2^-128 accident.  Main tokens keys are the scope
  // itself, main requests keys carry the 1.0 constant.
  static constexpr uint64_t kKind[kLimitKinds] = {0, 0x9e3779b97f4a7c15ULL};
  static constexpr uint64_t kRole[kCounterRoles] = {0,
                                                    0xbf58476d1ce4e5b9ULL,
                                                    0x94d049bb133111ebULL,
                                                    0xd6e8feb86659fd93ULL,
                                                    0xff51afd7ed558ccdULL,
                                                    0xc4ceb9fe1a85ec53ULL,
                                                    0x2545f4914f6cdd1dULL};
  const auto k = static_cast<std::size_t>(kind) < kLimitKinds ? static_cast<std::size_t>(kind) : 0;
  const auto r =
      static_cast<std::size_t>(role) < kCounterRoles ? static_cast<std::size_t>(role) : 0;
  Hash128 key = scope;
  key.lo ^= kKind[k] ^ kRole[r];
  // {0,0} marks an empty slot.  Only a scope whose hi is 0 and whose lo is
  // one of the fourteen constants gets here; 1 is none of the other keys then.
  if (key.is_zero()) key.lo = 1;
  return key;
}

Hash128 limit_key(const Hash128& scope, LimitKind kind, uint8_t algorithm, int64_t window_micros,
                  CounterRole role) noexcept {
  Hash128 key = counter_key(scope, kind, role);
  // A 64-bit mix of the shape (splitmix64 finalizer); 0 for nothing, so a
  // collision needs a 2^-64 accident on top of the scope's 2^-128.
  uint64_t z = static_cast<uint64_t>(window_micros) * 0x9e3779b97f4a7c15ULL + algorithm + 1;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  key.lo ^= z;
  if (key.is_zero()) key.lo = 1;  // {0,0} marks an empty slot
  return key;
}

const char* scope_kind_name(ScopeKind scope) noexcept {
  switch (scope) {
    case ScopeKind::UserEndpoint:
      return "user_endpoint";
    case ScopeKind::User:
      return "user";
    case ScopeKind::Endpoint:
      return "endpoint";
    case ScopeKind::Default:
      return "default";
  }
  return "user";
}

}  // namespace rate_limiter::core
