// One decision: rules -> counter keys -> partition locks -> core -> unlock.
//
// decide_call() takes the partition locks of the call's counters.  It is
// noexcept and calls nothing that can ereport, allocate, run SQL or call user
// code; the caller has already validated the arguments and looked up the
// rules (rule_lookup.hpp), and raises any error only after decide_call()
// returned.  It is one of several holders of partition locks; all of them
// take the locks through shmem/partition_locks.hpp, which lists them.
#pragma once

#include <string_view>
#include <type_traits>

#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/pg/support/postgres.hpp"
#include "rate_limiter/pg/rules/rule_lookup.hpp"

namespace rate_limiter::pg {

struct CallInput {
  core::CallRequest request;
  std::string_view user;
  bool has_endpoint = false;
  std::string_view endpoint;
  const ApplicableRules* rules = nullptr;  // looked up in phase 1
  // How new counters are admitted (key_budget.hpp): of configured scopes,
  // and of users under the default rule.
  core::Admission configured;
  core::Admission default_class;
};

enum class CallStatus {
  Decided,      // decision is valid
  LockTimeout,  // a partition lock wait ran out; nothing was charged
  TableFull,    // a counter could not be created (refusal tells why) and the call is refused;
                // nothing charged
};

// What the result record reports about the binding limit.
struct BindingLimit {
  bool present = false;
  core::LimitKind kind = core::LimitKind::Tokens;
  core::ScopeKind scope = core::ScopeKind::User;
  bool burst_cap = false;  // burst_limit over burst_window_seconds
  core::Algorithm algorithm = core::Algorithm::FixedWindow;
  int64 limit = 0;         // capacity() of the binding limit
  int64 window_micros = 0;
};

// One counter a decision charged: enough to give the units back
// (core::refund) after the locks are gone.
struct ChargedCounter {
  core::Hash128 key;
  core::LimitRule rule;
  int64 units = 0;
  int64 window = 0;
  uint16 generation = 0;  // the slot's when charged (core::CounterSlot)
  uint8 role = 0;         // 0 main, 1 emergency, 2 burst budget
  core::LimitKind kind = core::LimitKind::Tokens;
  core::ScopeKind scope = core::ScopeKind::User;  // as reported (Default: the default rule)
  bool burst_cap = false;  // the counter of a burst cap (core::CounterRole::BurstCap)
};

// Each applied limit can charge its counter, its emergency counter and its
// burst budget.
constexpr int kMaxChargedCounters = 3 * core::kMaxAppliedLimits;

// One enforced limit's usage around an allowed call, for the quota and
// emergency alerts (alerts.hpp).  "Exhausted" is what the core denies on:
// a request limit without a request left, a token quota of which not even
// the largest priority share is a whole token.
struct LimitUsage {
  bool present = false;  // false: the limit went unenforced (fail-open)
  core::LimitKind kind = core::LimitKind::Tokens;
  core::ScopeKind scope = core::ScopeKind::User;
  bool burst_cap = false;
  int64 capacity = 0;
  int64 used_before = 0;  // capacity - available(), before and after the charge
  int64 used_after = 0;
  bool exhausted_before = false;
  bool exhausted_after = false;
  int64 window_start = 0;  // aligned window of the limit's length: the alerts' dedup window
  int64 emergency_units = 0;
};

// N elements of T left unconstructed: a call's result holds arrays of
// about 4 kB that each call would otherwise zero (callgrind: ~800
// instructions a call in memset).  Only elements below the matching count
// are ever read, and each is written whole before (T is trivially
// destructible and copyable).
template <typename T, int N>
struct UninitializedArray {
  static_assert(std::is_trivially_destructible_v<T> && std::is_trivially_copyable_v<T>);
  union {
    T items[N];
  };
  UninitializedArray() noexcept {}
  T& operator[](int i) noexcept { return items[i]; }
  const T& operator[](int i) const noexcept { return items[i]; }
};

struct CallResult {
  CallStatus status = CallStatus::Decided;
  core::Decision decision;
  BindingLimit binding;
  bool fail_open = false;  // some limit went unenforced (table full, failure_mode = open)
  core::AcquireStatus refusal = core::AcquireStatus::Ok;  // why a counter could not be created
  bool keys_added = false;  // the call created counters
  UninitializedArray<ChargedCounter, kMaxChargedCounters> charged;  // [0, charged_count)
  int charged_count = 0;
  // Allowed calls only; indexed as the limits, [0, usage_count).
  UninitializedArray<LimitUsage, core::kMaxAppliedLimits> usage;
  int usage_count = 0;
};

// The limiter's clock, in microseconds since the Unix epoch.  Wall-clock
// time read now (never the transaction start), or the frozen testing clock
// (rate_limiter.debug_clock), plus the testing offset.
int64 limiter_now_unix();

TimestampTz unix_to_timestamptz(int64 unix_micros);
int64 timestamptz_to_unix(TimestampTz t);

void decide_call(const CallInput& in, int64 now, CallResult* out) noexcept;

// The decision decide_call() would make at `now`, taken on copies of the
// counters read under shared partition locks: nothing is charged, created,
// advanced or evicted in shared memory, and no metric moves.  Only status,
// decision and binding are filled (no charges, no usage).  LockTimeout when
// a lock wait ran out.  For rate_limit_headers().
void preview_call(const CallInput& in, int64 now, CallResult* out) noexcept;

// The counters of `kind` among the applicable rules, main counters only,
// with their rules: what settle_tokens gives unused tokens back to.
// Returns how many were written to keys/rules (at most
// core::kMaxAppliedLimits).
int applicable_counters(const ApplicableRules& applicable, core::LimitKind kind, core::Hash128* keys,
                        core::LimitRule* rules);

// Every main counter and burst cap of the applicable rules, both kinds,
// with their rules, kinds and whether they are the default rule's (the
// counter rebuild's and a lockless grant's view of one call).  Returns how
// many were written (at most max).
int applicable_counter_rules(const ApplicableRules& applicable, core::Hash128* keys, core::LimitRule* rules,
                             core::LimitKind* kinds, bool* default_class, int max);

}  // namespace rate_limiter::pg
