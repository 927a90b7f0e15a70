#include "rate_limiter/core/scope_key.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

using namespace rate_limiter::core;

namespace {

// SipHash-2-4 128-bit reference vectors (veorq/SipHash vectors.h): key bytes
// 00..0f, message bytes 00..len-1.
const char* kSip128Vectors[] = {
    "a3817f04ba25a8e66df67214c7550293", "da87c1d86b99af44347659119b22fc45",
    "8177228da4a45dc7fca38bdef60affe4", "9c70b60c5267a94e5f33b6b02985ed51",
    "f88164c12d9c8faf7d0f6e7c7bcd5579", "1368875980776f8854527a07690e9627",
    "14eeca338b208613485ea0308fd7a15e", "a1f1ebbed8dbc153c0b84aa61ff08239",
    "3b62a9ba6258f5610f83e264f31497b4", "264499060ad9baabc47f8b02bb6d71ed",
};

std::string hex_of(const Hash128& h) {
  // Output byte order of the reference implementation: lo, then hi, each
  // little endian.
  std::string out;
  char buf[3];
  for (uint64_t word : {h.lo, h.hi}) {
    for (int i = 0; i < 8; ++i) {
      snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>((word >> (8 * i)) & 0xff));
      out += buf;
    }
  }
  return out;
}

SipKey reference_key() {
  SipKey k;
  for (int i = 0; i < 8; ++i) {
    k.k0 |= static_cast<uint64_t>(i) << (8 * i);
    k.k1 |= static_cast<uint64_t>(i + 8) << (8 * i);
  }
  return k;
}

}  // namespace

TEST(SipHash128, MatchesReferenceVectors) {
  unsigned char msg[16];
  for (int i = 0; i < 16; ++i) msg[i] = static_cast<unsigned char>(i);
  for (std::size_t len = 0; len < sizeof kSip128Vectors / sizeof kSip128Vectors[0]; ++len) {
    EXPECT_EQ(hex_of(siphash128(reference_key(), msg, len)), kSip128Vectors[len]) << "len " << len;
  }
}

TEST(SipHash128, IncrementalEqualsOneShot) {
  unsigned char msg[40];
  for (int i = 0; i < 40; ++i) msg[i] = static_cast<unsigned char>(i * 7 + 3);
  const Hash128 whole = siphash128(reference_key(), msg, sizeof msg);
  for (std::size_t split = 0; split <= sizeof msg; ++split) {
    SipHasher128 h(reference_key());
    h.update(msg, split);
    h.update(msg + split, sizeof msg - split);
    EXPECT_EQ(h.finish(), whole) << "split " << split;
  }
}

TEST(ScopeHash, FramingSeparatesFields) {
  const SipKey key = reference_key();
  EXPECT_NE(scope_hash(key, 1, ScopeKind::UserEndpoint, "ab", "c"),
            scope_hash(key, 1, ScopeKind::UserEndpoint, "a", "bc"));
  EXPECT_NE(scope_hash(key, 1, ScopeKind::User, "u", ""),
            scope_hash(key, 1, ScopeKind::Endpoint, "", "u"));
  EXPECT_NE(scope_hash(key, 1, ScopeKind::User, "u", ""),
            scope_hash(key, 2, ScopeKind::User, "u", ""));
  EXPECT_EQ(scope_hash(key, 7, ScopeKind::User, "u", ""),
            scope_hash(key, 7, ScopeKind::User, "u", ""));
}

TEST(ScopeHash, UserEndpointScopeDerivesFromTheUserScope) {
  // An ancestor is known by its user scope alone (hierarchy): its
  // per-endpoint scope must follow from that hash, tagged or not.
  const SipKey key = reference_key();
  const Hash128 user = scope_hash(key, 7, ScopeKind::User, "acme", "");
  const Hash128 direct = scope_hash(key, 7, ScopeKind::UserEndpoint, "acme", "chat");
  EXPECT_EQ(user_endpoint_scope(key, 7, user, "chat"), direct);
  EXPECT_EQ(user_endpoint_scope(key, 7, with_tag(user, 42), "chat"), direct);
  EXPECT_NE(user_endpoint_scope(key, 7, user, "chat2"), direct);
  EXPECT_NE(user_endpoint_scope(key, 8, user, "chat"), direct);
  EXPECT_NE(direct, user);
  EXPECT_NE(scope_hash(key, 7, ScopeKind::UserEndpoint, "acme", ""), user);
  EXPECT_NE(scope_hash(key, 7, ScopeKind::UserEndpoint, "acme", ""),
            scope_hash(key, 7, ScopeKind::Endpoint, "", ""));
}

TEST(ScopeHash, KeyChangesEverything) {
  SipKey other = reference_key();
  other.k1 ^= 1;
  EXPECT_NE(scope_hash(reference_key(), 1, ScopeKind::User, "u", ""),
            scope_hash(other, 1, ScopeKind::User, "u", ""));
}

TEST(CounterKey, KindsDifferAndNeverZero) {
  const Hash128 scope = scope_hash(reference_key(), 1, ScopeKind::User, "user123", "");
  EXPECT_NE(counter_key(scope, LimitKind::Tokens), counter_key(scope, LimitKind::Requests));
  EXPECT_FALSE(counter_key(Hash128{}, LimitKind::Tokens).is_zero());
  Hash128 only_requests_zero{0, 0x9e3779b97f4a7c15ULL};
  EXPECT_FALSE(counter_key(only_requests_zero, LimitKind::Requests).is_zero());
}

namespace {
constexpr CounterRole kRoles[] = {CounterRole::Main,         CounterRole::Emergency,
                                  CounterRole::BurstBudget,  CounterRole::BurstCap,
                                  CounterRole::AbuseDenials, CounterRole::ParentLink,
                                  CounterRole::Concurrency};
constexpr LimitKind kKinds[] = {LimitKind::Tokens, LimitKind::Requests};
}  // namespace

TEST(CounterKey, MainKeysAreThoseOfVersion1) {
  const Hash128 scope{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  EXPECT_EQ(counter_key(scope, LimitKind::Tokens), scope);
  EXPECT_EQ(counter_key(scope, LimitKind::Tokens, CounterRole::Main), scope);
  EXPECT_EQ(counter_key(scope, LimitKind::Requests),
            (Hash128{scope.hi, scope.lo ^ 0x9e3779b97f4a7c15ULL}));
}

TEST(CounterKey, EveryKindAndRoleIsDistinctAndSharesThePartition) {
  const Hash128 scope = scope_hash(reference_key(), 1, ScopeKind::User, "user123", "");
  std::vector<Hash128> keys;
  for (LimitKind k : kKinds)
    for (CounterRole r : kRoles) {
      const Hash128 key = counter_key(scope, k, r);
      EXPECT_EQ(key.hi, scope.hi) << "only the low half may differ";
      EXPECT_FALSE(key.is_zero());
      for (const Hash128& other : keys) EXPECT_NE(key, other);
      keys.push_back(key);
    }
  EXPECT_EQ(keys.size(), 14u);
}

TEST(CounterKey, NeverZeroAndStillDistinctForAdversarialScopes) {
  // The only scopes that can hit {0,0}: hi 0 and lo equal to one of the
  // fourteen XOR masks.  Their keys must stay non-zero and pairwise distinct.
  const Hash128 zero{};
  std::vector<uint64_t> masks;
  for (LimitKind k : kKinds)
    for (CounterRole r : kRoles) masks.push_back(counter_key(zero, k, r).lo ^ 0);
  // counter_key({0,0}, Tokens, Main) is remapped to {0,1}; the mask is 0.
  masks[0] = 0;
  for (uint64_t mask : masks) {
    const Hash128 scope{0, mask};
    std::vector<Hash128> keys;
    for (LimitKind k : kKinds)
      for (CounterRole r : kRoles) {
        const Hash128 key = counter_key(scope, k, r);
        EXPECT_FALSE(key.is_zero());
        for (const Hash128& other : keys) EXPECT_NE(key, other) << std::hex << mask;
        keys.push_back(key);
      }
  }
}

TEST(LimitKey, ShapesGetTheirOwnCounterInTheSamePartitionAndTag) {
  const SipKey sip{1, 2};
  const Hash128 scope = with_tag(scope_hash(sip, 7, ScopeKind::User, "u", {}), 42);
  const Hash128 day = limit_key(scope, LimitKind::Tokens, 0, 86'400 * kMicrosPerSecond);
  const Hash128 hour = limit_key(scope, LimitKind::Tokens, 0, 3'600 * kMicrosPerSecond);
  const Hash128 sliding = limit_key(scope, LimitKind::Tokens, 1, 86'400 * kMicrosPerSecond);
  EXPECT_NE(day, hour);
  EXPECT_NE(day, sliding);
  EXPECT_NE(day, limit_key(scope, LimitKind::Requests, 0, 86'400 * kMicrosPerSecond));
  EXPECT_NE(day, limit_key(scope, LimitKind::Tokens, 0, 86'400 * kMicrosPerSecond,
                           CounterRole::BurstCap));
  EXPECT_EQ(day,
            limit_key(scope, LimitKind::Tokens, 0, 86'400 * kMicrosPerSecond));  // deterministic
  for (const Hash128& k : {day, hour, sliding}) {
    EXPECT_EQ(k.hi, scope.hi);  // same partition (top of hi) and same tag (bottom of hi)
    EXPECT_EQ(tag_of(k), 42);
    EXPECT_FALSE(k.is_zero());
  }
}
