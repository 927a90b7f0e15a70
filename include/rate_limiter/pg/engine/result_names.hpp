// The names a decision is reported with: the text columns of the result
// records (scope, limit_kind, allocation_strategy, reason), shared by the
// hot path, rate_limit_headers() and the decision log.
#pragma once

#include "rate_limiter/pg/engine/hot_path.hpp"

namespace rate_limiter::pg {

const char* scope_name(core::ScopeKind s);
const char* kind_name(core::LimitKind k);
// limit_kind in the result: a burst cap reports its own kind.
const char* limit_kind_name(const DecidedLimit& l);
const char* strategy_name(core::Strategy s);
const char* outcome_reason(core::Outcome outcome, bool fail_open, core::CallKind kind);
// The reason column; shadow mode prefixes the would-be outcome with
// "shadow:" (palloc'd then).
const char* reason_of(const CallResult& r, core::CallKind kind);

}  // namespace rate_limiter::pg
