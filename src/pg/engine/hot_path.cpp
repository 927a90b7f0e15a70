#include "rate_limiter/pg/engine/hot_path.hpp"

#include <algorithm>
#include <new>
#include <type_traits>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

// A counter the call needs: the limit's own counter, or one of its
// emergency / burst-budget counters.  Every counter of a limit has a key that
// differs from the main key only in its low half (core::counter_key), so all
// of them live in the main counter's partition and the call's lock set is
// the set of its main counters' partitions.
struct PlannedCounter {
  core::Hash128 key;
  core::LimitRule rule;
  int64 key_window = 0;  // the nominal window the key was made with
  uint32 partition = 0;
  core::CounterState** target = nullptr;  // where decide() finds it
  bool default_class = false;             // made for a user under the default rule (key_budget.hpp)
  bool have = false;
  uint16 generation = 0;  // the slot's (CounterSlot), read under the lock
};

struct PlannedLimits {
  // [0, count) and [0, ncounters): each element is written whole by add()
  // and add_counter() before it is read (UninitializedArray).
  UninitializedArray<core::AppliedLimit, core::kMaxAppliedLimits> limits;
  UninitializedArray<PlannedCounter, kMaxChargedCounters> counters;
  int counter_of[core::kMaxAppliedLimits][3];  // main, emergency, burst; -1: none
  // Whose limit each one is: 0 the call's own scopes, i an ancestor's
  // (ApplicableRules::ancestors[i - 1], user scope owner[i]).
  uint8 level[core::kMaxAppliedLimits];
  core::Hash128 owner[core::kMaxAppliedLimits];
  int count = 0;
  int ncounters = 0;

  bool default_class = false;  // the limit being added is the default rule's

  int add_counter(const core::Hash128& key, const core::LimitRule& rule,
                  core::CounterState** target, int64 key_window) {
    PlannedCounter& c = counters[ncounters];
    c = PlannedCounter{};
    c.key = key;
    c.rule = rule;
    c.key_window = key_window;
    c.partition = core::partition_of(key, shared->geometry.partitions);
    c.target = target;
    c.default_class = default_class;
    *target = nullptr;
    return ncounters++;
  }

  void add(const core::CallRequest& request, core::ScopeKind reported, const ScopeRules& rules,
           int kind, const core::Hash128& counter_scope, int owner_level,
           const core::Hash128& owner_scope, int64 now) noexcept {
    const core::RuleRecord& kr = rules.kind[kind];
    const auto lk = static_cast<core::LimitKind>(kind);
    default_class = reported == core::ScopeKind::Default;
    {
      core::AppliedLimit& l = limits[count];
      l = core::AppliedLimit{};
      l.kind = lk;
      l.scope = reported;
      l.rule = limit_rule_of(kr, now);
      l.params = resolve_params(rules, kind);
      l.shadow = is_shadow_limit(rules, kind);
      level[count] = static_cast<uint8>(owner_level);
      owner[count] = owner_scope;
      // Every counter of the limit is keyed with the limit's own shape: its
      // nominal window, which a calendar period's length is not.
      const auto key = [&](core::CounterRole role) {
        return core::limit_key(counter_scope, lk, static_cast<uint8>(l.rule.algorithm),
                               kr.window_micros, role);
      };
      counter_of[count][0] =
          add_counter(key(core::CounterRole::Main), l.rule, &l.state, kr.window_micros);
      counter_of[count][1] = counter_of[count][2] = -1;
      // The strategy counters exist only for calls that use the strategy.
      if (request.emergency && l.params.emergency) {
        const core::LimitRule er = core::emergency_rule(l.rule, l.params);
        if (er.limit > 0)
          counter_of[count][1] = add_counter(key(core::CounterRole::Emergency), er,
                                             &l.emergency_state, kr.window_micros);
      }
      if (request.burst_mode && l.params.burst_mode && lk == core::LimitKind::Tokens) {
        const core::LimitRule br = core::burst_budget_rule(l.params);
        if (br.limit > 0)
          counter_of[count][2] = add_counter(key(core::CounterRole::BurstBudget), br,
                                             &l.burst_state, kr.window_micros);
      }
      ++count;
    }
    if (has_burst_cap(kr)) {
      core::AppliedLimit& c = limits[count];
      c = core::AppliedLimit{};
      c.kind = lk;
      c.scope = reported;
      c.burst_cap = true;
      c.rule = burst_cap_of(kr);
      c.params.dynamic = c.params.emergency = c.params.burst_mode = false;
      c.shadow = is_shadow_limit(rules, kind);  // a burst cap follows its limit
      level[count] = static_cast<uint8>(owner_level);
      owner[count] = owner_scope;
      counter_of[count][0] =
          add_counter(core::limit_key(counter_scope, lk, kr.algorithm, kr.window_micros,
                                      core::CounterRole::BurstCap),
                      c.rule, &c.state, kr.window_micros);
      counter_of[count][1] = counter_of[count][2] = -1;
      ++count;
    }
  }
};

// The limits that apply, in the order the core breaks ties by: user+endpoint,
// user (or the default rule), each ancestor nearest first (on the endpoint,
// then on all endpoints), endpoint; tokens before requests; each limit
// followed by its burst cap.  add(reported scope, rules, kind, counter
// scope, owner level, owner's user scope): level 0 is the call's own
// scopes, i > 0 the ancestor r.ancestors[i - 1].
template <typename AddFn>
void for_each_applicable(const ApplicableRules& r, AddFn add) {
  if (!r.any) return;
  for (int k = 0; k < core::kLimitKinds; ++k)
    if (r.user_endpoint.has[k])
      add(core::ScopeKind::UserEndpoint, r.user_endpoint, k, r.user_endpoint_scope, 0,
          r.user_scope);
  for (int k = 0; k < core::kLimitKinds; ++k) {
    // The default applies per kind to users without their own rule of that
    // kind, and counts in the user's own counter.
    if (r.user.has[k])
      add(core::ScopeKind::User, r.user, k, r.user_scope, 0, r.user_scope);
    else if (r.fallback.has[k])
      add(core::ScopeKind::Default, r.fallback, k, r.user_scope, 0, r.user_scope);
  }
  for (int a = 0; a < r.ancestor_count; ++a) {
    const AncestorRules& up = r.ancestors[a];
    for (int k = 0; k < core::kLimitKinds; ++k)
      if (up.user_endpoint.has[k])
        add(core::ScopeKind::UserEndpoint, up.user_endpoint, k, up.user_endpoint_scope, a + 1,
            up.user_scope);
    for (int k = 0; k < core::kLimitKinds; ++k)
      if (up.user.has[k])
        add(core::ScopeKind::User, up.user, k, up.user_scope, a + 1, up.user_scope);
  }
  for (int k = 0; k < core::kLimitKinds; ++k)
    if (r.endpoint.has[k])
      add(core::ScopeKind::Endpoint, r.endpoint, k, r.endpoint_scope, 0, r.endpoint_scope);
}

// The decided limits of the result (DecidedLimit), in the core's order.
void fill_limits(const CallInput& in, const PlannedLimits& plan, CallResult* out) noexcept {
  out->limit_count = plan.count;
  for (int i = 0; i < plan.count; ++i) {
    const core::AppliedLimit& l = plan.limits[i];
    DecidedLimit& dl = out->limits[i];
    dl = DecidedLimit{};
    dl.kind = l.kind;
    dl.scope = l.scope;
    dl.burst_cap = l.burst_cap;
    dl.rule = l.rule;
    dl.owner_level = plan.level[i];
    dl.owner_scope = plan.owner[i];
    dl.owner_id = nullptr;
    // The ancestor's id, named by the rule lookup (rule_lookup.hpp).
    if (dl.owner_level > 0 && dl.owner_level <= in.rules->ancestor_count) {
      const char* id = in.rules->ancestors[dl.owner_level - 1].id;
      if (id[0] != '\0') dl.owner_id = id;
    }
  }
}

// What every enforced limit had available around an allowed call.  Runs
// under the partition locks: arithmetic on the locked counters only.
void measure_limits(const PlannedLimits& plan, const core::Decision& d, int64 now,
                    CallResult* out) noexcept {
  for (int i = 0; i < plan.count; ++i) {
    const core::AppliedLimit& l = plan.limits[i];
    if (l.state == nullptr) continue;  // unenforced (fail-open): not measured
    DecidedLimit& dl = out->limits[i];
    dl.measured = true;
    dl.available_after = core::available(l.rule, *l.state, now);
    dl.available_before = dl.available_after + d.charges[i].units;
  }
}

// core::decide() straight into the result: the decision is several kB
// (charges for the largest call) and a copy of it would cost more than
// most of its arithmetic.  C++17 elides the prvalue into the placement
// new; Decision is trivially destructible, so nothing is skipped.
void decide_into(core::Decision* out, const core::CallRequest& request, core::AppliedLimit* limits,
                 std::size_t n, const core::PriorityShares& shares, int64 now) noexcept {
  static_assert(std::is_trivially_destructible_v<core::Decision>);
  new (out) core::Decision(core::decide(request, limits, n, shares, now));
}

// ---- concurrency limits (leases.hpp); under the lease lock ----

bool takes_leases(const CallInput& in) noexcept {
  return in.request.kind == core::CallKind::Allocate && in.rules != nullptr &&
         in.rules->concurrency_count > 0;
}

// The denial of a call whose concurrency limit `c` (or the lease table) is
// full: nothing was decided, so the result names only that limit.
void deny_in_flight(const ConcurrencyLimit& c, core::Outcome outcome, int64 retry_at, int64 now,
                    CallResult* out) noexcept {
  core::Decision& d = out->decision;
  d.outcome = outcome;
  d.granted = 0;
  d.binding = 0;
  d.tokens_remaining = d.requests_remaining = -1;
  d.binding_remaining = 0;
  d.reset_at = retry_at > now ? retry_at : 0;
  d.retry_after = retry_at > now ? retry_at - now : 0;
  d.retry_found = retry_at > now;
  d.strategy = core::Strategy::None;
  d.burst_tokens = d.emergency_units = 0;
  d.shadowed = false;
  out->limit_count = 1;
  DecidedLimit& l = out->limits[0];
  l = DecidedLimit{};
  l.concurrency = true;
  l.kind = core::LimitKind::Requests;
  l.scope = c.scope;
  l.rule.limit = c.max_in_flight;
  l.rule.window_micros = c.lease_timeout;
}

// Whether every concurrency limit of the call has a slot free at `now`
// (and the table a lease for each); if not, the denial is in `out`.  With
// rate_limiter.shadow_mode nothing is denied: *shadow says a full limit
// was overridden (its lease is taken anyway, over the limit, so that the
// count goes on; a full table takes none).
bool admit_in_flight(const CallInput& in, core::LeaseTable* t, int64 now, CallResult* out,
                     bool* shadow) noexcept {
  const ApplicableRules& r = *in.rules;
  *shadow = false;
  for (int i = 0; i < r.concurrency_count; ++i) {
    const ConcurrencyLimit& c = r.concurrency[i];
    const core::LeaseRoom room = t->room(c.lease_scope, c.max_in_flight, now);
    if (room.ok) continue;
    if (settings.shadow_mode) {
      *shadow = true;
      continue;
    }
    deny_in_flight(c, core::Outcome::DeniedConcurrency, room.retry_at, now, out);
    return false;
  }
  // Expired leases of scopes that never filled up are swept here, when the
  // table runs out: they must not keep it full.
  int64 retry_at = 0;
  if (!t->make_room(static_cast<uint32>(r.concurrency_count), now, &retry_at) &&
      !settings.shadow_mode) {
    deny_in_flight(r.concurrency[0], core::Outcome::DeniedLeaseTableFull, retry_at, now, out);
    return false;
  }
  return true;
}

// Shadow mode: an allowed call that a full in-flight limit would have denied.
void mark_in_flight_shadow(bool shadow, core::Decision* d) noexcept {
  if (!shadow || !d->allowed() || d->shadowed) return;
  d->shadowed = true;
  d->shadow_outcome = core::Outcome::DeniedConcurrency;
}

void take_in_flight(const CallInput& in, core::LeaseTable* t, int64 now, CallResult* out) noexcept {
  const ApplicableRules& r = *in.rules;
  out->leases.count = 0;
  for (int i = 0; i < r.concurrency_count; ++i) {
    const ConcurrencyLimit& c = r.concurrency[i];
    const core::LeaseHandle h = t->take(c.lease_scope, now, now + c.lease_timeout, lease_owner(),
                                        MyProcPid, in.lease_group);
    if (h.index >= 0) out->leases.handles[out->leases.count++] = h;
  }
}

void plan_limits(const CallInput& in, int64 now, PlannedLimits* plan) noexcept {
  for_each_applicable(*in.rules,
                      [&](core::ScopeKind reported, const ScopeRules& r, int k,
                          const core::Hash128& scope, int level, const core::Hash128& owner) {
                        plan->add(in.request, reported, r, k, scope, level, owner, now);
                      });
}

}  // namespace

int64 limiter_now_unix() {
  const int64 base = settings.debug_clock_s > 0
                         ? static_cast<int64>(settings.debug_clock_s) * USECS_PER_SEC
                         : GetCurrentTimestamp() + kPostgresEpochUnixMicros;
  return base + static_cast<int64>(settings.debug_time_offset_s) * USECS_PER_SEC;
}

TimestampTz unix_to_timestamptz(int64 unix_micros) {
  return unix_micros - kPostgresEpochUnixMicros;
}

int64 timestamptz_to_unix(TimestampTz t) { return t + kPostgresEpochUnixMicros; }

int applicable_counters(const ApplicableRules& applicable, core::LimitKind kind,
                        core::Hash128* keys, core::LimitRule* rules, int64 at) {
  int n = 0;
  for_each_applicable(applicable, [&](core::ScopeKind, const ScopeRules& r, int k,
                                      const core::Hash128& scope, int, const core::Hash128&) {
    if (k != static_cast<int>(kind) || n >= static_cast<int>(core::kMaxAppliedLimits)) return;
    keys[n] = core::limit_key(scope, kind, r.kind[k].algorithm, r.kind[k].window_micros);
    rules[n] = limit_rule_of(r.kind[k], at);
    ++n;
  });
  return n;
}

int applicable_counter_rules(const ApplicableRules& applicable, core::Hash128* keys,
                             core::LimitRule* rules, core::LimitKind* kinds, bool* default_class,
                             int max, int64 at) {
  int n = 0;
  for_each_applicable(applicable, [&](core::ScopeKind reported, const ScopeRules& r, int k,
                                      const core::Hash128& scope, int, const core::Hash128&) {
    const auto kind = static_cast<core::LimitKind>(k);
    const core::RuleRecord& rec = r.kind[k];
    if (n < max) {
      keys[n] = core::limit_key(scope, kind, rec.algorithm, rec.window_micros);
      rules[n] = limit_rule_of(rec, at);
      kinds[n] = kind;
      default_class[n++] = reported == core::ScopeKind::Default;
    }
    if (has_burst_cap(rec) && n < max) {
      keys[n] = core::limit_key(scope, kind, rec.algorithm, rec.window_micros,
                                core::CounterRole::BurstCap);
      rules[n] = burst_cap_of(rec);
      kinds[n] = kind;
      default_class[n++] = reported == core::ScopeKind::Default;
    }
  });
  return n;
}

std::string_view limit_owner(const CallInput& in, const DecidedLimit& l) noexcept {
  if (l.owner_level > 0)
    return l.owner_id != nullptr ? std::string_view(l.owner_id) : std::string_view();
  if (l.scope == core::ScopeKind::Endpoint) return {};
  return in.user;
}

void decide_call(const CallInput& in, int64 now, CallResult* out) noexcept {
  PlannedLimits plan;
  plan_limits(in, now, &plan);
  const core::PriorityShares shares = current_priority_shares();

  const bool leased = takes_leases(in);

  if (plan.count == 0) {
    out->status = CallStatus::Decided;
    if (!leased) {
      decide_into(&out->decision, in.request, nullptr, 0, shares, now);
      return;
    }
    lock_leases();
    core::LeaseTable t = lease_table();
    bool shadow = false;
    if (admit_in_flight(in, &t, now, out, &shadow)) {
      decide_into(&out->decision, in.request, nullptr, 0, shares, now);
      take_in_flight(in, &t, now, out);
      // A limit applied (the concurrency limit): "granted", not "no_limit".
      out->decision.outcome = core::Outcome::Granted;
      mark_in_flight_shadow(shadow, &out->decision);
    }
    unlock_leases();
    return;
  }

  PartitionSet set;
  for (int i = 0; i < plan.ncounters; ++i) set.add(plan.counters[i].partition);
  if (!acquire_partitions(set, LW_EXCLUSIVE, settings.lock_timeout_ms)) {
    out->status = CallStatus::LockTimeout;
    return;
  }

  // ---- partition locks held: plain arithmetic only below this line ----
  uint64 keys_before = 0, keys_after = 0, evicted_total = 0;
  for (int i = 0; i < set.count; ++i) keys_before += counter_partition(set.ids[i]).count();
  bool table_full = false;
  for (int i = 0; i < plan.ncounters; ++i) {
    PlannedCounter& c = plan.counters[i];
    uint32 evicted = 0;
    core::AcquireStatus status = core::AcquireStatus::Ok;
    core::CounterSlot* slot =
        counter_partition(c.partition)
            .acquire(c.key, c.rule, now, c.default_class ? in.default_class : in.configured,
                     &evicted, &status);
    evicted_total += evicted;
    if (slot != nullptr) {
      c.have = true;
      continue;
    }
    if (out->refusal == core::AcquireStatus::Ok || status == core::AcquireStatus::OwnerFull)
      out->refusal = status;
    // Only a table full of live counters fails open.  A role over its share,
    // or a default class filled by such roles, is refused whatever
    // failure_mode says: failing open would hand the misbehaving roles (or
    // every new default-rule user) an unlimited grant.
    if (settings.failure_mode == kFailOpen && status == core::AcquireStatus::TableFull) {
      out->fail_open = true;  // this counter goes unenforced for this call
    } else {
      table_full = true;
      break;
    }
  }
  // An eviction inside a later acquire() may have shifted the slots acquired
  // before it, so pointers are taken only now, when nothing moves any more.
  for (int i = 0; i < plan.ncounters && !table_full; ++i) {
    PlannedCounter& c = plan.counters[i];
    if (!c.have) continue;
    // Never nullptr: a slot acquired at `now` is live, so no eviction removed it.
    core::CounterSlot* slot = counter_partition(c.partition).find(c.key);
    Assert(slot != nullptr);
    *c.target = slot != nullptr ? &slot->state : nullptr;
    if (slot != nullptr) c.generation = core::CounterPartition::generation_of(*slot);
  }
  // Decided by the core: false when nothing was decided (table full) or a
  // concurrency limit denied the call before the core saw it.
  bool decided = !table_full;
  if (!table_full) {
    if (settings.debug_hold_lock_ms > 0) pg_usleep(settings.debug_hold_lock_ms * 1000L);
    // The lease lock, inside the partition locks, spans the room check,
    // the decision and the take: no other call can take the slot between.
    core::LeaseTable t = lease_table();
    bool shadow = false;
    if (leased) {
      lock_leases();
      decided = admit_in_flight(in, &t, now, out, &shadow);
    }
    if (decided) {
      decide_into(&out->decision, in.request, plan.limits.items, plan.count, shares, now);
      fill_limits(in, plan, out);
      if (out->decision.allowed()) {
        measure_limits(plan, out->decision, now, out);
        if (leased) take_in_flight(in, &t, now, out);
        mark_in_flight_shadow(shadow, &out->decision);
      }
    }
    if (leased) unlock_leases();
  }
  for (int i = 0; i < set.count; ++i) keys_after += counter_partition(set.ids[i]).count();
  release_partitions(set);
  // ---- locks released ----

  if (decided) {
    const core::Decision& d = out->decision;
    // What was charged, counter by counter, for refunds.
    for (int i = 0; i < plan.count; ++i) {
      const core::Charge& ch = d.charges[i];
      const int64 units[3] = {ch.units, ch.emergency_units, ch.burst_units};
      const int64 windows[3] = {ch.window, ch.emergency_window, ch.burst_window};
      for (int role = 0; role < 3; ++role) {
        const int c = plan.counter_of[i][role];
        if (c < 0 || units[role] <= 0 || !plan.counters[c].have) continue;
        ChargedCounter& cc = out->charged[out->charged_count++];
        cc.key = plan.counters[c].key;
        cc.rule = plan.counters[c].rule;
        cc.key_window = plan.counters[c].key_window;
        cc.units = units[role];
        cc.window = windows[role];
        cc.generation = plan.counters[c].generation;
        cc.role = static_cast<uint8>(role);
        cc.limit = static_cast<uint8>(i);
      }
    }
  }

  SharedMetrics& m = shared->metrics;
  if (evicted_total > 0) metric_add(&m.evictions, evicted_total);
  if (keys_after > keys_before) metric_add(&m.keys_in_use, keys_after - keys_before);
  if (keys_after < keys_before) pg_atomic_fetch_sub_u64(&m.keys_in_use, keys_before - keys_after);
  out->keys_added = keys_after > keys_before;
  out->status = table_full ? CallStatus::TableFull : CallStatus::Decided;
}

void preview_call(const CallInput& in, int64 now, CallResult* out) noexcept {
  PlannedLimits plan;
  plan_limits(in, now, &plan);
  const core::PriorityShares shares = current_priority_shares();
  out->status = CallStatus::Decided;
  if (plan.count == 0) {
    decide_into(&out->decision, in.request, nullptr, 0, shares, now);
    return;
  }
  PartitionSet set;
  for (int i = 0; i < plan.ncounters; ++i) set.add(plan.counters[i].partition);
  if (!acquire_partitions(set, LW_SHARED, settings.lock_timeout_ms)) {
    out->status = CallStatus::LockTimeout;
    return;
  }
  // ---- partition locks held (shared): copies only ----
  // A counter that does not exist yet reads as unused, as in
  // rate_limiter_peek_counter(); none is created.
  core::CounterState copies[kMaxChargedCounters];
  for (int i = 0; i < plan.ncounters; ++i) {
    const PlannedCounter& c = plan.counters[i];
    if (const core::CounterSlot* slot = counter_partition(c.partition).find(c.key))
      copies[i] = slot->state;
  }
  release_partitions(set);
  // ---- locks released ----
  // The core decides on the copies: what it charges to them is thrown away.
  for (int i = 0; i < plan.ncounters; ++i) *plan.counters[i].target = &copies[i];
  decide_into(&out->decision, in.request, plan.limits.items, plan.count, shares, now);
  fill_limits(in, plan, out);
}

}  // namespace rate_limiter::pg
