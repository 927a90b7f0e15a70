// Plain value types shared by every part of the pure core.
//
// Nothing under include/rate_limiter/core/ may include a PostgreSQL header:
// the core is compiled into the extension *and* into the GoogleTest binary
// that runs without a server.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rate_limiter::core {

// A 128-bit keyed hash. It identifies a scope (and, with the limit kind
// folded in, a counter) without storing the user and endpoint strings in
// shared memory.  {0, 0} is reserved as the "empty slot" marker of the
// counter table; counter_key() never returns it.
struct Hash128 {
  uint64_t hi = 0;
  uint64_t lo = 0;

  constexpr bool is_zero() const noexcept { return hi == 0 && lo == 0; }
};

constexpr bool operator==(const Hash128& a, const Hash128& b) noexcept {
  return a.hi == b.hi && a.lo == b.lo;
}
constexpr bool operator!=(const Hash128& a, const Hash128& b) noexcept { return !(a == b); }
constexpr bool operator<(const Hash128& a, const Hash128& b) noexcept {
  return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}

// Which set of callers a limit covers.  The numeric values are hashed into
// scope identities, so they must never change.
enum class ScopeKind : uint8_t {
  UserEndpoint = 0,  // one user on one endpoint
  User = 1,          // one user on all endpoints (explicit rule)
  Endpoint = 2,      // all users on one endpoint (per-API limit)
  Default = 3,       // the per-user default rule; its counters are User counters
};

// What a limit counts.  Also hashed: never renumber.
enum class LimitKind : uint8_t {
  Tokens = 0,    // max_tokens_per_period per period_interval
  Requests = 1,  // max_requests_per_window per window_duration
};
constexpr int kLimitKinds = 2;

enum class Priority : uint8_t { High = 0, Medium = 1, Low = 2 };
constexpr int kPriorities = 3;

constexpr int64_t kMicrosPerSecond = 1'000'000;
constexpr int64_t kMicrosPerDay = 86'400 * kMicrosPerSecond;

// Bounds that every input is validated against before any lock is taken.
// They keep all arithmetic far from int64 overflow: a counter never exceeds
// its limit, a limit never exceeds kMaxQuantity, and window arithmetic stays
// below 2^62 microseconds.
constexpr int64_t kMinWindowMicros = kMicrosPerSecond;      // 1 second
constexpr int64_t kMaxWindowMicros = 3650 * kMicrosPerDay;  // 3650 days
constexpr int64_t kMaxQuantity = 1'000'000'000'000'000;     // 10^15 tokens or requests
constexpr std::size_t kMaxIdBytes = 255;                    // user_id, api_endpoint, session_id

// How many ancestors (set_parent) a user's calls are checked against: a
// user, its parent, ... up to kMaxAncestors levels above it.
constexpr int kMaxAncestors = 8;

// Priority shares are fixed-point parts per million so that
// floor(share * remaining) is exact (0.29 * 100 must be 29, not 28).
constexpr uint32_t kShareScale = 1'000'000;

}  // namespace rate_limiter::core
