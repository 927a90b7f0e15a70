#include "rate_limiter/pg/counter_recovery.hpp"

#include <csignal>

#include <algorithm>
#include <string_view>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/extension_catalog.hpp"
#include "rate_limiter/pg/hot_path.hpp"
#include "rate_limiter/pg/rule_cache.hpp"
#include "rate_limiter/pg/settings.hpp"
#include "rate_limiter/pg/shared_state.hpp"

namespace rate_limiter::pg {
namespace {

// This backend saw the installation's counters complete; 0: not yet.
uint64 recovered_installation = 0;

constexpr long kFetchRows = 10000;  // rows per cursor fetch while replaying

// One counter to merge into shared memory.
struct Rebuilt {
  core::Hash128 key;
  core::LimitRule rule;
  core::CounterState state;
};

struct RebuiltList {
  Rebuilt* items = nullptr;
  int count = 0;
  int capacity = 0;

  void add(const core::Hash128& key, const core::LimitRule& rule, const core::CounterState& state) {
    if (count == capacity) {
      capacity = capacity == 0 ? 64 : capacity * 2;
      items = static_cast<Rebuilt*>(items == nullptr ? palloc(capacity * sizeof(Rebuilt))
                                                     : repalloc(items, capacity * sizeof(Rebuilt)));
    }
    items[count++] = Rebuilt{key, rule, state};
  }
};

// One rule row, as the rule cache reads it (rule_cache.cpp keeps the
// parsed form only; here the ids are needed to select usage rows).
struct RuleText {
  core::LimitKind kind;
  char* user;      // nullptr: NULL
  char* endpoint;  // nullptr: NULL
  core::LimitRule rule;
  bool has_cap;
  core::LimitRule cap;
};

// The oldest usage row that can still count for the rule at `now`.
int64 replay_since(const core::LimitRule& rule, int64 now) {
  const int64 start = core::aligned_window_start(now, rule.window_micros);
  switch (rule.algorithm) {
    case core::Algorithm::FixedWindow:
      return start;
    case core::Algorithm::SlidingWindow:
      return start - rule.window_micros;
    case core::Algorithm::TokenBucket:
    case core::Algorithm::Gcra: {
      // A bucket is full again capacity emission intervals after its last
      // charge: older rows cannot matter.
      const __int128 horizon =
          (static_cast<__int128>(core::capacity(rule)) * rule.window_micros + rule.limit - 1) / rule.limit;
      return horizon >= now ? 0 : now - static_cast<int64>(horizon);
    }
  }
  return start;
}

char* text_or_null(HeapTuple tuple, TupleDesc desc, int column) {
  bool isnull = false;
  Datum d = SPI_getbinval(tuple, desc, column, &isnull);
  return isnull ? nullptr : TextDatumGetCString(d);
}

// Every rule row of both tables (version 1.0 tables have no options).
RuleText* load_rules(const ExtensionCatalog* ext, int* n) {
  const bool has_options = get_attnum(ext->token_limits, "algorithm") != InvalidAttrNumber;
  const char* options = has_options ? "algorithm, coalesce(burst, 0), burst_limit, burst_window_seconds"
                                    : "'fixed_window'::text, 0::bigint, NULL::bigint, NULL::integer";
  char* sql = psprintf(
      "SELECT 0, user_id, api_endpoint, max_tokens_per_period, period_interval, %s FROM %s.token_limits "
      "UNION ALL "
      "SELECT 1, user_id, api_endpoint, max_requests_per_window, window_duration, %s FROM %s.request_limits",
      options, ext->quoted_schema, options, ext->quoted_schema);
  if (SPI_execute(sql, true, 0) != SPI_OK_SELECT) elog(ERROR, "rate_limiter: could not read the rules");
  *n = static_cast<int>(SPI_processed);
  auto* rules = static_cast<RuleText*>(palloc0(Max(*n, 1) * sizeof(RuleText)));
  for (int i = 0; i < *n; ++i) {
    HeapTuple t = SPI_tuptable->vals[i];
    TupleDesc d = SPI_tuptable->tupdesc;
    bool isnull[9];
    Datum v[9];
    for (int c = 0; c < 9; ++c) v[c] = SPI_getbinval(t, d, c + 1, &isnull[c]);
    RuleText& r = rules[i];
    r.kind = DatumGetInt32(v[0]) == 0 ? core::LimitKind::Tokens : core::LimitKind::Requests;
    r.user = text_or_null(t, d, 2);
    r.endpoint = text_or_null(t, d, 3);
    r.rule.limit = std::clamp<int64>(DatumGetInt64(v[3]), 1, core::kMaxQuantity);
    r.rule.window_micros = std::clamp<int64>(interval_to_micros(DatumGetIntervalP(v[4])),
                                             core::kMinWindowMicros, core::kMaxWindowMicros);
    const char* algorithm = TextDatumGetCString(v[5]);
    if (!core::parse_algorithm(algorithm, strlen(algorithm), &r.rule.algorithm))
      r.rule.algorithm = core::Algorithm::FixedWindow;
    r.rule.burst = std::clamp<int64>(DatumGetInt64(v[6]), 0, core::kMaxQuantity - 1);
    r.has_cap = !isnull[7] && !isnull[8];
    if (r.has_cap) {
      r.cap.limit = std::clamp<int64>(DatumGetInt64(v[7]), 1, core::kMaxQuantity);
      r.cap.window_micros = std::clamp<int64>(static_cast<int64>(DatumGetInt32(v[8])) * USECS_PER_SEC,
                                              core::kMinWindowMicros, core::kMaxWindowMicros);
      r.cap.algorithm = core::Algorithm::FixedWindow;
    }
  }
  return rules;
}

// Replays the rows of `portal` (columns: timestamp, tokens_used[, user_id])
// into the rule's counters.  With group_by_user, rows come ordered by user
// and each user gets counters of their own (the default rule).
void replay(Portal portal, const RuleText& r, const core::Hash128* scope, bool group_by_user,
            const ExtensionCatalog* ext, int64 now, RebuiltList* out) {
  core::CounterState main, cap;
  char* user = nullptr;
  auto finish = [&](const core::Hash128& scope_hash) {
    const core::CounterState m = core::advance(r.rule, main, now);
    out->add(core::counter_key(scope_hash, r.kind), r.rule, m);
    if (r.has_cap)
      out->add(core::counter_key(scope_hash, r.kind, core::CounterRole::BurstCap), r.cap,
               core::advance(r.cap, cap, now));
  };
  auto user_scope = [&](const char* u) {
    return core::scope_hash(shared->hash_key, ext->installation, core::ScopeKind::User, u, {});
  };
  bool any = false;
  for (;;) {
    SPI_cursor_fetch(portal, true, kFetchRows);
    if (SPI_processed == 0) break;
    for (uint64 i = 0; i < SPI_processed; ++i) {
      HeapTuple t = SPI_tuptable->vals[i];
      TupleDesc d = SPI_tuptable->tupdesc;
      bool isnull = false;
      const int64 at = timestamptz_to_unix(DatumGetTimestampTz(SPI_getbinval(t, d, 1, &isnull)));
      const int64 tokens = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
      if (group_by_user) {
        char* row_user = text_or_null(t, d, 3);
        if (user == nullptr || strcmp(user, row_user) != 0) {
          if (user != nullptr) {
            finish(user_scope(user));
            pfree(user);
          }
          user = row_user;
          main = cap = core::CounterState{};
        } else {
          pfree(row_user);
        }
      }
      const int64 units = r.kind == core::LimitKind::Tokens ? tokens : 1;
      // consume() clamps to what was available at that instant, exactly as
      // the decision did.
      core::consume(r.rule, &main, units, at);
      if (r.has_cap) core::consume(r.cap, &cap, units, at);
      any = true;
    }
    SPI_freetuptable(SPI_tuptable);  // keep memory bounded by one fetch
  }
  if (group_by_user) {
    if (user != nullptr) finish(user_scope(user));
  } else if (any) {
    finish(*scope);
  }
}

void rebuild_installation(const ExtensionCatalog* ext, RebuiltList* out) {
  const int64 now = limiter_now_unix();
  int n = 0;
  RuleText* rules = load_rules(ext, &n);
  Oid types[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};
  for (int i = 0; i < n; ++i) {
    const RuleText& r = rules[i];
    int64 since = replay_since(r.rule, now);
    if (r.has_cap) since = std::min(since, replay_since(r.cap, now));
    Datum values[3] = {r.user ? CStringGetTextDatum(r.user) : (Datum)0,
                       r.endpoint ? CStringGetTextDatum(r.endpoint) : (Datum)0,
                       TimestampTzGetDatum(unix_to_timestamptz(since))};
    const char nulls[3] = {r.user ? ' ' : 'n', r.endpoint ? ' ' : 'n', ' '};
    const char* filter;
    core::ScopeKind scope_kind;
    bool per_user = false;
    if (r.user && r.endpoint) {
      filter = "user_id = $1 AND api_endpoint = $2";
      scope_kind = core::ScopeKind::UserEndpoint;
    } else if (r.user) {
      filter = "user_id = $1";
      scope_kind = core::ScopeKind::User;
    } else if (r.endpoint) {
      filter = "api_endpoint = $2";
      scope_kind = core::ScopeKind::Endpoint;
    } else {
      // The default rule counts each user without a rule of this kind of
      // their own, in the user's own counter.
      filter = r.kind == core::LimitKind::Tokens
                   ? "$1 IS NULL AND $2 IS NULL AND NOT EXISTS (SELECT 1 FROM %1$s.token_limits o "
                     "WHERE o.user_id = u.user_id AND o.api_endpoint IS NULL)"
                   : "$1 IS NULL AND $2 IS NULL AND NOT EXISTS (SELECT 1 FROM %1$s.request_limits o "
                     "WHERE o.user_id = u.user_id AND o.api_endpoint IS NULL)";
      scope_kind = core::ScopeKind::User;
      per_user = true;
    }
    char* where = psprintf(filter, ext->quoted_schema);
    char* sql = psprintf("SELECT u.\"timestamp\", u.tokens_used, u.user_id FROM %s.token_usage u "
                         "WHERE %s AND u.\"timestamp\" >= $3 ORDER BY %s u.\"timestamp\"",
                         ext->quoted_schema, where, per_user ? "u.user_id," : "");
    SPIPlanPtr plan = SPI_prepare(sql, 3, types);
    if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the usage replay");
    Portal portal = SPI_cursor_open(nullptr, plan, values, nulls, true);
    core::Hash128 scope{};
    if (!per_user)
      scope = core::scope_hash(shared->hash_key, ext->installation, scope_kind,
                               r.user ? std::string_view(r.user) : std::string_view(),
                               r.endpoint ? std::string_view(r.endpoint) : std::string_view());
    replay(portal, r, &scope, per_user, ext, now, out);
    SPI_cursor_close(portal);
    SPI_freeplan(plan);
  }
}

// Merges rebuilt counters into shared memory: the state with less
// available wins, so nothing charged since (or by an earlier rebuild) is
// lost.  Plain arithmetic under each partition lock.
void merge(const RebuiltList& list, int64 now) {
  for (int i = 0; i < list.count; ++i) {
    const Rebuilt& r = list.items[i];
    const uint32 p = core::partition_of(r.key, shared->geometry.partitions);
    LWLockAcquire(partition_lock(p), LW_EXCLUSIVE);
    core::CounterPartition part = counter_partition(p);
    const uint32 before = part.count();
    const core::CounterSlot* slot = part.find(r.key);
    if (slot == nullptr ||
        core::available(r.rule, r.state, now) < core::available(r.rule, slot->state, now))
      part.store(r.key, r.state, now);
    const uint32 after = part.count();
    LWLockRelease(partition_lock(p));
    if (after > before) pg_atomic_fetch_add_u64(&shared->metrics.keys_in_use, after - before);
  }
}

RecoveryEntry* entry_for(uint64 installation) {
  RecoveryState& rs = shared->recovery;
  RecoveryEntry* free_entry = nullptr;
  RecoveryEntry* oldest_done = nullptr;
  for (RecoveryEntry& e : rs.entries) {
    if (e.installation == installation) return &e;
    if (e.installation == 0 && free_entry == nullptr) free_entry = &e;
    if (e.status == kRecoveryDone && (oldest_done == nullptr || e.last_used < oldest_done->last_used))
      oldest_done = &e;
  }
  // Forgetting a completed installation only costs a second rebuild, which
  // the merge makes harmless.
  RecoveryEntry* e = free_entry != nullptr ? free_entry : oldest_done;
  if (e != nullptr) *e = RecoveryEntry{installation, kRecoveryNone, 0, 0};
  return e;
}

void set_status(uint64 installation, RecoveryStatus status) {
  LWLockAcquire(recovery_lock(), LW_EXCLUSIVE);
  for (RecoveryEntry& e : shared->recovery.entries)
    if (e.installation == installation) e.status = status;
  LWLockRelease(recovery_lock());
  ConditionVariableBroadcast(&shared->recovery.done);
}

void run_rebuild(const ExtensionCatalog* ext) {
  const TimestampTz started = GetCurrentTimestamp();
  RebuiltList list;
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  rebuild_installation(ext, &list);
  // Merge while the SPI memory (which holds the list) is still alive.
  merge(list, limiter_now_unix());
  SPI_finish();
  owner.restore();
  long secs;
  int usecs;
  TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
  ereport(LOG, (errmsg("rate_limiter: rebuilt %d counters of database \"%s\" from token_usage in %ld.%03d s",
                       list.count, get_database_name(MyDatabaseId), secs, usecs / 1000)));
}

}  // namespace

void ensure_counters_recovered() {
  // A standby has no counters of its own (it never decides), and rebuilding
  // there would mark the installation complete with rows that keep
  // arriving: refuse, and rebuild after promotion.
  if (RecoveryInProgress())
    ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                    errmsg("rate_limiter counters are kept on the primary server"),
                    errhint("Call the primary: quota is counted there.")));
  const ExtensionCatalog* ext = extension_catalog();
  if (recovered_installation == ext->installation) return;
  const uint64 installation = ext->installation;
  const TimestampTz deadline =
      TimestampTzPlusMilliseconds(GetCurrentTimestamp(), settings.recovery_timeout_ms);
  for (;;) {
    LWLockAcquire(recovery_lock(), LW_EXCLUSIVE);
    RecoveryEntry* e = entry_for(installation);
    bool rebuild = false;
    if (e != nullptr) {
      e->last_used = ++shared->recovery.clock;
      if (e->status == kRecoveryDone) {
        LWLockRelease(recovery_lock());
        ConditionVariableCancelSleep();
        recovered_installation = installation;
        return;
      }
      // A rebuilder that died without an error (FATAL, killed) left its
      // claim behind: take it over.
      if (e->status == kRecoveryNone || (e->status == kRecoveryRunning && kill(e->pid, 0) != 0)) {
        e->status = kRecoveryRunning;
        e->pid = MyProcPid;
        rebuild = true;
      }
    }
    LWLockRelease(recovery_lock());
    if (rebuild) {
      ConditionVariableCancelSleep();
      PG_TRY();
      { run_rebuild(ext); }
      PG_CATCH();
      {
        set_status(installation, kRecoveryNone);  // let the next caller retry
        PG_RE_THROW();
      }
      PG_END_TRY();
      set_status(installation, kRecoveryDone);
      recovered_installation = installation;
      return;
    }
    const long wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
    if (wait_ms <= 0) {
      ConditionVariableCancelSleep();
      ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                      errmsg("rate_limiter counters of this database are still being rebuilt"),
                      errdetail("After a crash or a promotion the counters are rebuilt from token_usage "
                                "before the first decision."),
                      errhint("Retry, or raise rate_limiter.recovery_timeout.")));
    }
    ConditionVariableTimedSleep(&shared->recovery.done, wait_ms, PG_WAIT_EXTENSION);
  }
}

}  // namespace rate_limiter::pg
