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

#include "rate_limiter/core/counter_table.hpp"
#include "rate_limiter/core/decision.hpp"
#include "rate_limiter/pg/engine/leases.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/support.hpp"

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
  uint32 lease_group = 0;  // the installation's tag: whose leases (leases.hpp) a call takes
};

enum class CallStatus {
  Decided,      // decision is valid
  LockTimeout,  // a partition lock wait ran out; nothing was charged
  TableFull,    // a counter could not be created (refusal tells why) and the call is refused;
                // nothing charged
};

// One applied limit of a decided call, as the core saw it.  Readers derive
// what they report from it (capacity(), used = capacity - available), so
// the result holds one copy of each limit and nothing computed twice.
struct DecidedLimit {
  core::LimitKind kind = core::LimitKind::Tokens;
  core::ScopeKind scope = core::ScopeKind::User;  // as reported (Default: the default rule)
  bool burst_cap = false;  // a burst cap: burst_limit over burst_window_seconds
  // A concurrency limit (only ever the binding limit of a call it denied):
  // rule.limit is max_in_flight, rule.window_micros the lease timeout.
  bool concurrency = false;
  core::LimitRule rule;
  // Whose limit it is: 0 the call's own scopes (the user's, the default
  // rule's, the endpoint's), i > 0 the user's i-th ancestor, whose user
  // scope is owner_scope and whose id is owner_id (the rule lookup's copy,
  // ApplicableRules::ancestors; nullptr when it could not be found).
  uint8 owner_level = 0;
  core::Hash128 owner_scope;
  const char* owner_id = nullptr;
  // Allowed calls of decide_call() only: the limit's counter was there
  // (false: it went unenforced, fail-open) and what it had available
  // before and after the charge, read under the partition lock.
  bool measured = false;
  int64 available_before = 0;
  int64 available_after = 0;

  int64 capacity() const noexcept { return core::capacity(rule); }
};

// One counter a decision charged: enough to give the units back
// (core::refund) after the locks are gone.  Its limit is limits[limit].
struct ChargedCounter {
  core::Hash128 key;
  core::LimitRule rule;  // the counter's own (an emergency counter's differs from its limit's)
  int64 key_window = 0;  // the window its key was made with: the limit's nominal one
  int64 units = 0;
  int64 window = 0;
  uint16 generation = 0;  // the slot's when charged (core::CounterSlot)
  uint8 role = 0;         // 0 main, 1 emergency, 2 burst budget
  uint8 limit = 0;        // index into CallResult::limits
};

// Each applied limit can charge its counter, its emergency counter and its
// burst budget.
constexpr int kMaxChargedCounters = 3 * core::kMaxAppliedLimits;

struct CallResult {
  CallStatus status = CallStatus::Decided;
  core::Decision decision;
  bool fail_open = false;  // some limit went unenforced (table full, failure_mode = open)
  core::AcquireStatus refusal = core::AcquireStatus::Ok;  // why a counter could not be created
  bool keys_added = false;                                // the call created counters
  // The applied limits in the core's order (decision.binding and
  // decision.charges index them), [0, limit_count).  Filled when the
  // status is Decided and limits applied.
  UninitializedArray<DecidedLimit, core::kMaxAppliedLimits> limits;
  int limit_count = 0;
  UninitializedArray<ChargedCounter, kMaxChargedCounters> charged;  // [0, charged_count)
  int charged_count = 0;
  // The in-flight leases an allowed allocation took (leases.hpp).
  CallLeases leases;

  // The limit the result record reports, or nullptr (no limit applied,
  // revoked, fail-open).
  const DecidedLimit* binding() const noexcept {
    const int b = decision.binding;
    return b >= 0 && b < limit_count ? &limits[b] : nullptr;
  }
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

// limit_owner of the result records: the id whose counter the limit counts
// in - the user for its own limits and the default rule, the ancestor's
// id for an ancestor's - or empty (SQL NULL) for an endpoint-wide limit
// and an ancestor whose id was not found.
std::string_view limit_owner(const CallInput& in, const DecidedLimit& l) noexcept;

// The counters of `kind` among the applicable rules, main counters only,
// with their rules at `at` (calendar periods: the period containing it).
// Returns how many were written to keys/rules (at most
// core::kMaxAppliedLimits).
int applicable_counters(const ApplicableRules& applicable, core::LimitKind kind,
                        core::Hash128* keys, core::LimitRule* rules, int64 at);

// Every main counter and burst cap of the applicable rules, both kinds,
// with their rules, kinds and whether they are the default rule's (the
// counter rebuild's and a lockless grant's view of one call), the rules as
// at `at`.  Returns how many were written (at most max).
int applicable_counter_rules(const ApplicableRules& applicable, core::Hash128* keys,
                             core::LimitRule* rules, core::LimitKind* kinds, bool* default_class,
                             int max, int64 at);

}  // namespace rate_limiter::pg
