// What one grant charged to its token quotas, kept with its usage row
// (token_usage.charges) so that settle_tokens gives back exactly what the
// grant took from each quota, and nothing to a quota it did not charge.
//
// Only the main counters of token limits are recorded (their own limits and
// token burst caps): the units within each limit.  The emergency allowance
// and the burst budget are never given back, and requests are never
// refunded.  Each record names the counter (key and rule, as charged), the
// window or bucket instant of the charge (core::consume()), the slot's
// generation at the charge (core::CounterSlot: a reset or a crash rebuild
// since means the counter no longer holds it) and the scope that was
// charged (for rate_limit_resets).
//
// Encoding: one version byte (kGrantChargesVersion), then kGrantChargeBytes
// per charge, fields in this server's byte order.  It is internal: a row
// restored into another installation names keys of that installation's
// scopes only by chance (they are keyed with the installation), and then
// finds no counter to refund.
#pragma once

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/pg/hot_path.hpp"

namespace rate_limiter::pg {

struct GrantCharge {
  core::Hash128 key;
  core::LimitRule rule;
  int64 units = 0;
  int64 window = 0;  // consume()'s result
  uint16 generation = 0;
  core::ScopeKind scope = core::ScopeKind::User;
};

constexpr uint8 kGrantChargesVersion = 1;
constexpr uint32 kGrantChargeBytes = 1 + 1 + 2 + 16 + 8 * 5;
constexpr int kMaxGrantCharges = static_cast<int>(core::kMaxAppliedLimits);
constexpr uint32 kMaxGrantChargesBytes = 1 + kMaxGrantCharges * kGrantChargeBytes;

// The token charges of an allowed allocate_tokens call into `out` (at
// least kMaxGrantChargesBytes); returns the length, 0 when it charged no
// token quota.
uint32 encode_grant_charges(const CallResult& result, char* out) noexcept;

// Decodes up to kMaxGrantCharges records; -1 when the bytes are not a
// well-formed record of this version.
int decode_grant_charges(const char* bytes, uint32 length, GrantCharge* out) noexcept;

}  // namespace rate_limiter::pg
