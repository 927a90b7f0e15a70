#include "rate_limiter/pg/alerts/alerts.hpp"

#include <algorithm>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"

namespace rate_limiter::pg {
namespace {

constexpr uint8 kTokensKind = 0, kRequestsKind = 1, kTokenBurstKind = 2, kRequestBurstKind = 3;
constexpr uint8 kNoLimitKind = kNoScope;

const char* scope_text(uint8 scope) {
  if (scope == kNoScope) return nullptr;  // server-wide alerts
  return core::scope_kind_name(static_cast<core::ScopeKind>(scope));
}

const char* limit_kind_text(uint8 kind) {
  switch (kind) {
    case kTokensKind:
      return "tokens";
    case kRequestsKind:
      return "requests";
    case kTokenBurstKind:
      return "token_burst";
    case kRequestBurstKind:
      return "request_burst";
  }
  return nullptr;
}

uint8 limit_kind_of(core::LimitKind kind, bool burst_cap) {
  if (kind == core::LimitKind::Tokens) return burst_cap ? kTokenBurstKind : kTokensKind;
  return burst_cap ? kRequestBurstKind : kRequestsKind;
}

// A record with every optional field empty, for an installation.
AlertRecord blank_for(AlertKind kind, int64 now, Oid database, Oid extension) {
  AlertRecord r;
  memset(&r, 0, sizeof r);
  r.kind = kind;
  r.scope = kNoScope;
  r.limit_kind = kNoLimitKind;
  r.user_len = kNullId;
  r.endpoint_len = kNullId;
  r.limit = -1;
  r.used = -1;
  r.at = now;
  r.database = database;
  r.extension = extension;
  return r;
}

// ... for the caller's installation.
AlertRecord blank(AlertKind kind, int64 now) {
  const uint64 installation = extension_catalog()->installation;  // cached by the call
  return blank_for(kind, now, static_cast<Oid>(installation >> 32),
                   static_cast<Oid>(installation & 0xffffffffu));
}

// Into the stream of the caller's installation (cached by the call).
void push(const AlertRecord& r) {
  alert_queue_push(installation_index(extension_catalog()->slot), r);
}

void set_ids(AlertRecord* r, std::string_view user, bool has_endpoint, std::string_view endpoint) {
  // Ids are at most kMaxIdBytes (validated by arguments.cpp); min() only guards.
  r->user_len = static_cast<int16>(std::min(user.size(), core::kMaxIdBytes));
  memcpy(r->user, user.data(), r->user_len);
  if (has_endpoint) {
    r->endpoint_len = static_cast<int16>(std::min(endpoint.size(), core::kMaxIdBytes));
    memcpy(r->endpoint, endpoint.data(), r->endpoint_len);
  }
}

int64 alert_interval_start(int64 now) {
  return core::aligned_window_start(now,
                                    static_cast<int64>(settings.alert_interval_s) * USECS_PER_SEC);
}

// Counts one denial of `user` in its abuse counter (a fixed window of
// abuse_window holding abuse_denials + 1 units, CounterRole::AbuseDenials of
// the user scope).  True when this denial is the one past abuse_denials:
// the counter just ran out, which happens once per window.  Takes the
// counter's partition lock only here, on denials; best effort: a lock wait
// that runs out or a full partition counts nothing.
bool count_denial(std::string_view user, int64 now, int64* window_start) {
  if (settings.abuse_denials <= 0) return false;
  core::LimitRule rule;
  rule.algorithm = core::Algorithm::FixedWindow;
  rule.limit = static_cast<int64>(settings.abuse_denials) + 1;
  rule.window_micros =
      std::clamp<int64>(static_cast<int64>(settings.abuse_window_s) * USECS_PER_SEC,
                        core::kMinWindowMicros, core::kMaxWindowMicros);
  const core::Hash128 scope = scope_of(extension_catalog(), core::ScopeKind::User, user, {});
  // Like a default-rule counter: counted against the calling role's share.
  const core::Admission admission = key_admission(true);
  const core::Hash128 key =
      core::counter_key(scope, core::LimitKind::Requests, core::CounterRole::AbuseDenials);
  const uint32 partition = core::partition_of(key, shared->geometry.partitions);
  PartitionSet set;
  set.add(partition);
  if (!acquire_partitions(set, LW_EXCLUSIVE, settings.lock_timeout_ms)) return false;
  // ---- partition lock held: plain arithmetic only ----
  core::CounterPartition counters = counter_partition(partition);
  const uint64 keys_before = counters.count();
  uint32 evicted = 0;
  bool crossed = false;
  core::AcquireStatus status;
  if (core::CounterSlot* slot = counters.acquire(key, rule, now, admission, &evicted, &status)) {
    // acquire() has brought the slot to `now`.
    const int64 left = core::available(rule, slot->state, now);
    if (left > 0) {
      *window_start = core::consume(rule, &slot->state, 1, now);
      crossed = left == 1;
    }
  }
  const uint64 keys_after = counters.count();
  release_partitions(set);
  // ---- released ----
  SharedMetrics& m = shared->metrics;
  if (evicted > 0) metric_add(&m.evictions, evicted);
  if (keys_after > keys_before) metric_add(&m.keys_in_use, keys_after - keys_before);
  if (keys_after < keys_before) pg_atomic_fetch_sub_u64(&m.keys_in_use, keys_before - keys_after);
  return crossed;
}

// One enforced limit's usage around an allowed call, derived from what the
// decision measured under the lock.  "Exhausted" is what the core denies
// on: a request limit (or a burst cap) without a unit left, a token quota
// of which not even the largest priority share is a whole token.
struct LimitUsage {
  int64 capacity;
  int64 used_before;
  int64 used_after;
  bool exhausted_before;
  bool exhausted_after;
  int64 window_start;  // aligned window of the limit's length: the alerts' dedup window
};

LimitUsage usage_of(const DecidedLimit& l, uint32 top_share, int64 now) {
  const auto exhausted = [&](int64 remaining) {
    return l.kind == core::LimitKind::Requests || l.burst_cap
               ? remaining <= 0
               : core::priority_cap(top_share, remaining) < 1;
  };
  const int64 cap = l.capacity();
  return LimitUsage{cap,
                    cap - l.available_before,
                    cap - l.available_after,
                    exhausted(l.available_before),
                    exhausted(l.available_after),
                    core::aligned_window_start(now, l.rule.window_micros, l.rule.origin)};
}

uint32 top_priority_share() {
  const core::PriorityShares shares = current_priority_shares();
  return std::max({shares.ppm[0], shares.ppm[1], shares.ppm[2]});
}

void quota_alerts(const CallInput& in, const CallResult& r, int64 now) {
  const uint32 top_share = top_priority_share();
  for (int i = 0; i < r.limit_count; ++i) {
    const DecidedLimit& l = r.limits[i];
    if (!l.measured || l.capacity() <= 0) continue;
    const LimitUsage u = usage_of(l, top_share, now);
    for (int t = 0; t < alert_thresholds.count; ++t) {
      const int pct = alert_thresholds.pct[t];
      // 100 is "exhausted" (what the core denies on); the others compare
      // usage with pct% of the capacity, exactly (__int128: no overflow).
      const bool crossed = pct >= 100 ? (!u.exhausted_before && u.exhausted_after)
                                      : (static_cast<__int128>(u.used_before) * 100 <
                                             static_cast<__int128>(pct) * u.capacity &&
                                         static_cast<__int128>(u.used_after) * 100 >=
                                             static_cast<__int128>(pct) * u.capacity);
      if (!crossed) continue;
      AlertRecord a = blank(AlertKind::QuotaThreshold, now);
      // An ancestor's quota (hierarchies) is the ancestor's, not the caller's.
      set_ids(&a,
              l.owner_level > 0 && l.owner_id != nullptr ? std::string_view(l.owner_id) : in.user,
              in.has_endpoint, in.endpoint);
      a.scope = static_cast<uint8>(l.scope);
      a.limit_kind = limit_kind_of(l.kind, l.burst_cap);
      a.threshold = pct;
      a.limit = u.capacity;
      a.used = u.used_after;
      a.window_start = u.window_start;
      push(a);
    }
  }
}

void emergency_alert(const CallInput& in, const CallResult& r, int64 now) {
  const core::Decision& d = r.decision;
  // The limit that gave the most emergency units, else the binding one.
  int pick = d.binding;
  int64 most = 0;
  for (int i = 0; i < r.limit_count; ++i)
    if (r.limits[i].measured && d.charges[i].emergency_units > most) {
      most = d.charges[i].emergency_units;
      pick = i;
    }
  AlertRecord a = blank(AlertKind::EmergencyOverride, now);
  set_ids(&a, in.user, in.has_endpoint, in.endpoint);
  a.window_start = now;
  if (pick >= 0 && pick < r.limit_count && r.limits[pick].measured) {
    const DecidedLimit& l = r.limits[pick];
    const LimitUsage u = usage_of(l, top_priority_share(), now);
    a.scope = static_cast<uint8>(l.scope);
    a.limit_kind = limit_kind_of(l.kind, l.burst_cap);
    a.limit = u.capacity;
    a.used = u.used_after;
    a.window_start = u.window_start;
  }
  push(a);
}

// Writes "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, independent of TimeZone).
void append_utc(StringInfo buf, int64 unix_micros) {
  struct pg_tm tm;
  fsec_t fsec;
  if (timestamp2tm(unix_to_timestamptz(unix_micros), nullptr, &tm, &fsec, nullptr, nullptr) != 0) {
    appendStringInfoString(buf, "null");
    return;
  }
  appendStringInfo(buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\"", tm.tm_year, tm.tm_mon,
                   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(fsec));
}

void append_string(StringInfo buf, const char* key, const char* bytes, int len) {
  appendStringInfo(buf, ", \"%s\": ", key);
  if (bytes == nullptr || len < 0) {
    appendStringInfoString(buf, "null");
    return;
  }
  escape_json(buf, pnstrdup(bytes, len));
}

void append_number(StringInfo buf, const char* key, int64 value, bool present) {
  if (present)
    appendStringInfo(buf, ", \"%s\": " INT64_FORMAT, key, value);
  else
    appendStringInfo(buf, ", \"%s\": null", key);
}

}  // namespace

void raise_call_alerts(const CallInput& in, const CallResult& r, int64 now) {
  // Only a served database has a worker to write its alerts: elsewhere
  // nothing is raised (nor are denials counted for abuse).
  if (!database_served()) return;
  if (r.status == CallStatus::TableFull) {
    raise_degradation_alert(AlertKind::TableFull, now);
    return;
  }
  if (r.status != CallStatus::Decided) return;
  const core::Decision& d = r.decision;
  if (r.fail_open) {
    raise_degradation_alert(AlertKind::TableFull, now);
    if (d.allowed()) raise_degradation_alert(AlertKind::FailOpen, now);
  }
  // The fill level is read without a lock; the dedup window keeps this to
  // one alert per alert_interval.
  if (r.keys_added && settings.alert_table_fill > 0 &&
      pg_atomic_read_u64(&shared->metrics.keys_in_use) * 100 >=
          static_cast<uint64>(settings.alert_table_fill) * shared->geometry.total_capacity())
    raise_degradation_alert(AlertKind::TableFilling, now);
  if (d.allowed()) {
    if (alert_thresholds.count > 0) quota_alerts(in, r, now);
    if (d.strategy == core::Strategy::Emergency) emergency_alert(in, r, now);
    return;
  }
  int64 window_start = 0;
  if (count_denial(in.user, now, &window_start)) {
    AlertRecord a = blank(AlertKind::Abuse, now);
    set_ids(&a, in.user, false, {});
    a.scope = static_cast<uint8>(core::ScopeKind::User);
    a.limit = settings.abuse_denials;
    a.used = static_cast<int64>(settings.abuse_denials) + 1;
    a.window_start = window_start;
    push(a);
  }
}

void raise_degradation_alert(AlertKind kind, int64 now) {
  if (!database_served()) return;
  AlertRecord a = blank(kind, now);
  a.window_start = alert_interval_start(now);
  push(a);
}

void raise_flush_lag_alert(int stream, Oid database, Oid extension, int64 lag_ms,
                           int64 threshold_ms, int64 now) {
  // No catalog lookup: the worker raises it outside any transaction.
  AlertRecord a = blank_for(AlertKind::FlushLag, now, database, extension);
  a.limit = threshold_ms;
  a.used = lag_ms;
  a.window_start = alert_interval_start(now);
  alert_queue_push(stream, a);
}

void raise_dead_letter_alert(int stream, Oid database, Oid extension, uint64 rows, int64 now) {
  AlertRecord a = blank_for(AlertKind::DeadLetter, now, database, extension);
  a.used = static_cast<int64>(Min(rows, static_cast<uint64>(PG_INT64_MAX)));
  a.window_start = alert_interval_start(now);
  alert_queue_push(stream, a);
}

const char* alert_kind_text(const AlertRecord& r) {
  switch (r.kind) {
    case AlertKind::QuotaThreshold:
      return psprintf("quota_%s_%d", limit_kind_text(r.limit_kind), r.threshold);
    case AlertKind::Abuse:
      return "abuse";
    case AlertKind::EmergencyOverride:
      return "emergency_override";
    case AlertKind::TableFull:
      return "table_full";
    case AlertKind::FailOpen:
      return "fail_open";
    case AlertKind::FlushLag:
      return "flush_lag";
    case AlertKind::TableFilling:
      return "table_filling";
    case AlertKind::DeadLetter:
      return "usage_dead_letter";
  }
  return "unknown";
}

const char* alert_scope_text(const AlertRecord& r) {
  return r.scope == kNoScope ? nullptr : scope_text(r.scope);
}

char* alert_payload(const AlertRecord& r) {
  StringInfoData buf;
  initStringInfo(&buf);
  appendStringInfoString(&buf, "{\"kind\": ");
  escape_json(&buf, alert_kind_text(r));
  append_string(&buf, "user_id", r.user_len >= 0 ? r.user : nullptr, r.user_len);
  append_string(&buf, "api_endpoint", r.endpoint_len >= 0 ? r.endpoint : nullptr, r.endpoint_len);
  const char* scope = alert_scope_text(r);
  append_string(&buf, "scope", scope, scope != nullptr ? static_cast<int>(strlen(scope)) : -1);
  const char* lk = r.limit_kind == kNoLimitKind ? nullptr : limit_kind_text(r.limit_kind);
  append_string(&buf, "limit_kind", lk, lk != nullptr ? static_cast<int>(strlen(lk)) : -1);
  append_number(&buf, "limit", r.limit, r.limit >= 0);
  append_number(&buf, "used", r.used, r.used >= 0);
  append_number(&buf, "threshold", r.threshold, r.kind == AlertKind::QuotaThreshold);
  appendStringInfoString(&buf, ", \"window_start\": ");
  append_utc(&buf, r.window_start);
  appendStringInfoString(&buf, ", \"at\": ");
  append_utc(&buf, r.at);
  appendStringInfoChar(&buf, '}');
  return buf.data;
}

}  // namespace rate_limiter::pg
