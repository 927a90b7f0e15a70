// What one grant charged to its token quotas, kept with its usage row
// (token_usage.charges) so that settle_tokens gives back exactly what the
// grant took from each quota, and nothing to a quota it did not charge.
//
// Only the main counters of token limits are recorded: the units within
// each limit.  Token burst caps are not (a settle leaves them charged).  The emergency allowance
// and the burst budget are never given back, and requests are never
// refunded.  Each record names the counter by its scope kind and rule (the
// key follows from these and the row's user_id and api_endpoint,
// scope_key.hpp), the charge point
// (core::consume()) and the slot's generation at the charge
// (core::CounterSlot: a reset or a crash rebuild since means the counter
// no longer holds it).
//
// Encoding, compact because every grant's queued event carries it: one
// version byte (kGrantChargesVersion), then per charge a flags byte, the
// generation (2 bytes, little-endian) and unsigned LEB128 varints:
//   flags  bits 0-1 scope kind, 2-3 algorithm, 4 reserved (0),
//          5 units == the grant's tokens (else a units varint follows),
//          6 a burst (capacity / max_burst) varint follows,
//          7 the charge point is the aligned window of the decision time
//            (else a zigzag varint of charge point - decision time follows)
//   limit, window_micros[, burst][, units][, charge point delta]
// A fixed-window charge takes 12 bytes.  The decoder checks every bound.
// Version 2 (written when an ancestor's quota was charged, parent_links.hpp)
// gives bit 4 a meaning: the charge is the ancestor's whose id follows the
// generation (a varint length and the bytes); scope kind says which of its
// scopes (user or user+endpoint).  Version 1 records decode as before.
// Version 3 (written when a calendar period was charged,
// calendar_rules.hpp) is version 2 where window_micros is the limit's
// nominal window (its counter's key) and every fixed_window charge is
// followed by one more varint: the length of the period it was charged in
// (its start is the charge point), 0 for a window of the UTC grid.
#pragma once

#include <string_view>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/pg/engine/hot_path.hpp"

namespace rate_limiter::pg {

struct GrantCharge {
  core::ScopeKind scope = core::ScopeKind::User;
  core::LimitRule rule;  // as charged: a calendar period's own window
  int64 key_window = 0;  // the window of the counter's key (nominal)
  int64 units = 0;
  int64 window = 0;  // consume()'s result
  uint16 generation = 0;
  // Empty: the row's user's scope; else the ancestor whose counter it was
  // (points into the decoded bytes).
  std::string_view owner;
};

constexpr uint8 kGrantChargesVersion1 = 1;  // no ancestors
constexpr uint8 kGrantChargesVersion2 = 2;  // ancestors
constexpr uint8 kGrantChargesVersion = 3;   // calendar periods
// One token quota per scope (its main counter): the user on the endpoint,
// the user (or the default rule), the endpoint, and two per ancestor.
constexpr int kMaxGrantCharges = 3 + 2 * core::kMaxAncestors;
constexpr uint32 kMaxGrantChargeBytes = 1 + 2 + 6 * 10;  // flags, generation, six varints
// ... and each ancestor's charge its id with a two-byte length.
constexpr uint32 kMaxIdChargeBytes = 2 + static_cast<uint32>(core::kMaxIdBytes);
constexpr uint32 kMaxGrantChargesBytes =
    1 + kMaxGrantCharges * kMaxGrantChargeBytes + 2 * core::kMaxAncestors * kMaxIdChargeBytes;

// The token charges of an allowed allocate_tokens call that granted
// `tokens` at `now` (us since the Unix epoch) into `out` (at least
// kMaxGrantChargesBytes); returns the length, 0 when it charged no token
// quota.
uint32 encode_grant_charges(const CallResult& result, int64 tokens, int64 now, char* out) noexcept;

// Decodes up to kMaxGrantCharges records of a grant of `tokens` at `now`;
// -1 when the bytes are not a well-formed record of this version.
int decode_grant_charges(const char* bytes, uint32 length, int64 tokens, int64 now,
                         GrantCharge* out) noexcept;

}  // namespace rate_limiter::pg
