// Keyed 128-bit hashing of scope identities (SipHash-2-4, 128-bit output).
//
// Why keyed: user ids and endpoints come from clients.  With an unkeyed hash
// an attacker could pick ids that collide in one partition or, worse, share
// a counter with someone else.  The key is drawn at random when shared
// memory is created, so collisions cannot be planned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "rate_limiter/core/types.hpp"

namespace rate_limiter::core {

struct SipKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

// Incremental SipHash-2-4 with the 128-bit finalization of the reference
// implementation.  Output bytes are lo (little endian) then hi.
class SipHasher128 {
 public:
  explicit SipHasher128(const SipKey& key) noexcept;
  void update(const void* data, std::size_t len) noexcept;
  Hash128 finish() noexcept;

 private:
  void compress(uint64_t m) noexcept;

  uint64_t v0_, v1_, v2_, v3_;
  uint64_t tail_ = 0;      // pending bytes, little endian
  std::size_t ntail_ = 0;  // how many bytes of tail_ are used
  std::size_t total_ = 0;  // bytes hashed so far
};

Hash128 siphash128(const SipKey& key, const void* data, std::size_t len) noexcept;

// The identity of a scope: installation, scope kind, user and endpoint.
// The installation tells apart databases and successive installations of the
// extension (the PostgreSQL layer passes database OID << 32 | extension OID),
// so a DROP/CREATE EXTENSION starts from fresh counters.  Unused parts are
// passed empty.  Lengths are hashed too, so ("ab","c") and ("a","bc") differ.
//
// A UserEndpoint scope is user_endpoint_scope() of the user's User scope:
// the hot path finds an ancestor's per-endpoint limits from the ancestor's
// scope hash alone, without its id (hierarchy.hpp in the PostgreSQL layer).
Hash128 scope_hash(const SipKey& key, uint64_t installation, ScopeKind scope, std::string_view user,
                   std::string_view endpoint) noexcept;

// The UserEndpoint scope of the user whose User scope is `user_scope`
// (tagged or not: the tag bits are ignored) on `endpoint`.
Hash128 user_endpoint_scope(const SipKey& key, uint64_t installation, const Hash128& user_scope,
                            std::string_view endpoint) noexcept;

// Which counter of a limit a key names.  Hashed: never renumber.
enum class CounterRole : uint8_t {
  Main = 0,          // the limit's own counter
  Emergency = 1,     // its emergency allowance
  BurstBudget = 2,   // its burst-mode budget
  BurstCap = 3,      // the burst cap (burst_limit over burst_window_seconds) on top of it
  AbuseDenials = 4,  // a user's denials in the abuse window (alerts; user scope, requests kind)
  ParentLink = 5,    // not a counter: the rule-table key of a user's parent link (user scope,
                     // tokens kind; hierarchy.hpp in the PostgreSQL layer)
  Concurrency = 6,   // not a counter: a scope's concurrency limit record and its lease
                     // scope (tokens kind; concurrency_limits.hpp in the PostgreSQL layer)
};
constexpr int kCounterRoles = 7;

// The key of one counter: a scope identity with the limit kind and the
// counter's role folded in.  Distinct for every (kind, role) of a scope.
// Only the low half differs from the scope, so every counter of a scope
// lives in the same partition (partition_of() uses the high half).  Main
// keys are those of version 1.0.  Never {0,0}, which marks an empty slot.
Hash128 counter_key(const Hash128& scope, LimitKind kind,
                    CounterRole role = CounterRole::Main) noexcept;

// Installation tags.  The PostgreSQL layer numbers the installations it
// serves (installations.hpp) and stamps that number into the low 16 bits of
// hi of every scope hash of the installation, so that all of an
// installation's counters and rules can be found and reclaimed when it is
// dropped, without storing anything else per slot.  partition_of() reads the
// top bits of hi and the slot position comes from lo, so tagging moves
// nothing; counter_key() changes only lo, so a counter keeps its scope's
// tag.  A tag is never 0, so a tagged key is never {0,0}.
constexpr uint64_t kTagMask = 0xffff;

constexpr Hash128 with_tag(const Hash128& h, uint16_t tag) noexcept {
  return Hash128{(h.hi & ~kTagMask) | tag, h.lo};
}
constexpr uint16_t tag_of(const Hash128& h) noexcept {
  return static_cast<uint16_t>(h.hi & kTagMask);
}

// The key of one counter of a limit: counter_key() with the limit's shape
// (algorithm and window length) folded into the low half too.  A rule whose
// shape changes starts a new counter instead of rewriting the old one: the
// committed counter of a window change that a transaction makes and rolls
// back is untouched, and after a committed change the counter the changing
// transaction already charged carries on.  (A state built for another
// shape would restart from nothing anyway; a new limit keeps the counter.)
// Every role of one limit (main, burst cap, strategy budgets) takes the
// shape of the limit's own rule.  Only lo changes: same partition, same tag.
Hash128 limit_key(const Hash128& scope, LimitKind kind, uint8_t algorithm, int64_t window_micros,
                  CounterRole role = CounterRole::Main) noexcept;

// The scope as SQL names it: "user_endpoint", "user", "endpoint", "default".
const char* scope_kind_name(ScopeKind scope) noexcept;

}  // namespace rate_limiter::core
