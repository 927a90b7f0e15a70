#include "rate_limiter/pg/engine/result_names.hpp"

#include "rate_limiter/core/scope_key.hpp"

namespace rate_limiter::pg {

const char* scope_name(core::ScopeKind s) { return core::scope_kind_name(s); }

const char* kind_name(core::LimitKind k) {
  return k == core::LimitKind::Tokens ? "tokens" : "requests";
}

const char* limit_kind_name(const DecidedLimit& l) {
  if (l.concurrency) return "in_flight";
  if (l.burst_cap) return l.kind == core::LimitKind::Tokens ? "token_burst" : "request_burst";
  return kind_name(l.kind);
}

const char* strategy_name(core::Strategy s) {
  switch (s) {
    case core::Strategy::None:
      return "none";
    case core::Strategy::Priority:
      return "priority";
    case core::Strategy::Dynamic:
      return "dynamic";
    case core::Strategy::Burst:
      return "burst";
    case core::Strategy::Emergency:
      return "emergency";
  }
  return "none";
}

const char* outcome_reason(core::Outcome outcome, bool fail_open, core::CallKind kind) {
  switch (outcome) {
    case core::Outcome::NoLimit:
      return fail_open ? "fail_open_table_full" : "no_limit";
    case core::Outcome::Granted:
      if (fail_open) return "fail_open_table_full";
      return kind == core::CallKind::Allocate ? "granted" : "allowed";
    case core::Outcome::PartialGrant:
      return fail_open ? "fail_open_table_full" : "partial_grant";
    case core::Outcome::DeniedRequestLimit:
      return "request_limit_exceeded";
    case core::Outcome::DeniedTokenQuota:
      return "token_quota_exhausted";
    case core::Outcome::DeniedPriorityShare:
      return "priority_share_exhausted";
    case core::Outcome::DeniedAllOrNothing:
      return "insufficient_quota";
    case core::Outcome::DeniedExceedsCapacity:
      return "exceeds_capacity";
    case core::Outcome::DeniedRevoked:
      return "revoked";
    case core::Outcome::DeniedConcurrency:
      return "concurrency_limit_exceeded";
    case core::Outcome::DeniedLeaseTableFull:
      return "lease_table_full";
  }
  return "unknown";
}

// Shadow mode: the reason is the would-be outcome's, prefixed "shadow:".
const char* reason_of(const CallResult& r, core::CallKind kind) {
  const core::Decision& d = r.decision;
  if (d.shadowed) return psprintf("shadow:%s", outcome_reason(d.shadow_outcome, false, kind));
  return outcome_reason(d.outcome, r.fail_open, kind);
}

}  // namespace rate_limiter::pg
