#include "rate_limiter/pg/hot_path.hpp"

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/metrics.hpp"
#include "rate_limiter/pg/partition_locks.hpp"
#include "rate_limiter/pg/rule_cache.hpp"
#include "rate_limiter/pg/settings.hpp"
#include "rate_limiter/pg/shared_state.hpp"

namespace rate_limiter::pg {
namespace {

// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
constexpr int64 kPostgresEpochUnixMicros =
    static_cast<int64>(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

struct PlannedLimits {
  core::AppliedLimit limits[core::kMaxAppliedLimits];
  core::Hash128 keys[core::kMaxAppliedLimits];
  uint32 partitions[core::kMaxAppliedLimits];
  int count = 0;

  void add(core::ScopeKind reported, const ScopeRules& rules, int kind,
           const core::Hash128& counter_scope) noexcept {
    core::AppliedLimit& l = limits[count];
    l.kind = static_cast<core::LimitKind>(kind);
    l.scope = reported;
    l.rule = rules.rule[kind];
    l.state = nullptr;
    keys[count] = core::counter_key(counter_scope, l.kind);
    partitions[count] = core::partition_of(keys[count], shared->geometry.partitions);
    ++count;
  }
};

// The limits that apply, in the order the core breaks ties by: user+endpoint,
// user (or the default rule), endpoint; tokens before requests.
void plan_limits(const CallInput& in, PlannedLimits* plan) noexcept {
  if (rule_cache_empty()) return;
  const core::SipKey& key = shared->hash_key;
  const uint64 installation = rules_installation();
  if (in.has_endpoint) {
    const core::Hash128 ue = core::scope_hash(key, installation, core::ScopeKind::UserEndpoint, in.user, in.endpoint);
    if (const ScopeRules* r = find_scope_rules(ue))
      for (int k = 0; k < core::kLimitKinds; ++k)
        if (r->has[k]) plan->add(core::ScopeKind::UserEndpoint, *r, k, ue);
  }
  const core::Hash128 user = core::scope_hash(key, installation, core::ScopeKind::User, in.user, {});
  const ScopeRules* own = find_scope_rules(user);
  const ScopeRules* fallback = find_scope_rules(default_scope_hash());
  for (int k = 0; k < core::kLimitKinds; ++k) {
    // The default applies per kind to users without their own rule of that
    // kind, and counts in the user's own counter.
    if (own != nullptr && own->has[k])
      plan->add(core::ScopeKind::User, *own, k, user);
    else if (fallback != nullptr && fallback->has[k])
      plan->add(core::ScopeKind::Default, *fallback, k, user);
  }
  if (in.has_endpoint) {
    const core::Hash128 ep = core::scope_hash(key, installation, core::ScopeKind::Endpoint, {}, in.endpoint);
    if (const ScopeRules* r = find_scope_rules(ep))
      for (int k = 0; k < core::kLimitKinds; ++k)
        if (r->has[k]) plan->add(core::ScopeKind::Endpoint, *r, k, ep);
  }
}

}  // namespace

int64 limiter_now_unix() {
  return GetCurrentTimestamp() + kPostgresEpochUnixMicros +
         static_cast<int64>(settings.debug_time_offset_s) * USECS_PER_SEC;
}

TimestampTz unix_to_timestamptz(int64 unix_micros) { return unix_micros - kPostgresEpochUnixMicros; }

void decide_call(const CallInput& in, int64 now, CallResult* out) noexcept {
  PlannedLimits plan;
  plan_limits(in, &plan);
  const core::PriorityShares shares = current_priority_shares();

  if (plan.count == 0) {
    out->status = CallStatus::Decided;
    out->decision = core::decide(in.request, nullptr, 0, shares, now);
    return;
  }

  PartitionSet set;
  for (int i = 0; i < plan.count; ++i) set.add(plan.partitions[i]);
  if (!acquire_partitions(set, LW_EXCLUSIVE, settings.lock_timeout_ms)) {
    out->status = CallStatus::LockTimeout;
    return;
  }

  // ---- partition locks held: plain arithmetic only below this line ----
  uint64 keys_before = 0, keys_after = 0, evicted_total = 0;
  for (int i = 0; i < set.count; ++i) keys_before += counter_partition(set.ids[i]).count();
  bool table_full = false;
  bool have_counter[core::kMaxAppliedLimits] = {};
  for (int i = 0; i < plan.count; ++i) {
    uint32 evicted = 0;
    core::CounterSlot* slot = counter_partition(plan.partitions[i])
                                  .acquire(plan.keys[i], plan.limits[i].rule.window_micros, now, &evicted);
    evicted_total += evicted;
    if (slot != nullptr) {
      have_counter[i] = true;
    } else if (settings.failure_mode == kFailOpen) {
      out->fail_open = true;  // this limit goes unenforced for this call
    } else {
      table_full = true;
      break;
    }
  }
  // An eviction inside a later acquire() may have shifted the slots acquired
  // before it, so pointers are taken only now, when nothing moves any more.
  for (int i = 0; i < plan.count && !table_full; ++i) {
    if (!have_counter[i]) continue;
    // Never nullptr: a slot acquired at `now` is live, so no eviction removed it.
    core::CounterSlot* slot = counter_partition(plan.partitions[i]).find(plan.keys[i]);
    Assert(slot != nullptr);
    plan.limits[i].state = slot != nullptr ? &slot->state : nullptr;
  }
  if (!table_full) {
    if (settings.debug_hold_lock_ms > 0) pg_usleep(settings.debug_hold_lock_ms * 1000L);
    out->decision = core::decide(in.request, plan.limits, plan.count, shares, now);
    if (out->decision.binding >= 0) {
      const core::AppliedLimit& b = plan.limits[out->decision.binding];
      out->binding.present = true;
      out->binding.kind = b.kind;
      out->binding.scope = b.scope;
      out->binding.limit = b.rule.limit;
      out->binding.window_micros = b.rule.window_micros;
    }
  }
  for (int i = 0; i < set.count; ++i) keys_after += counter_partition(set.ids[i]).count();
  release_partitions(set);
  // ---- locks released ----

  SharedMetrics& m = shared->metrics;
  if (evicted_total > 0) metric_add(&m.evictions, evicted_total);
  if (keys_after > keys_before) metric_add(&m.keys_in_use, keys_after - keys_before);
  if (keys_after < keys_before) pg_atomic_fetch_sub_u64(&m.keys_in_use, keys_before - keys_after);
  out->status = table_full ? CallStatus::TableFull : CallStatus::Decided;
}

}  // namespace rate_limiter::pg
