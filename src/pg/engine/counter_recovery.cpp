#include "rate_limiter/pg/engine/counter_recovery.hpp"

#include <csignal>

#include <algorithm>
#include <string_view>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/engine/hot_path.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr long kFetchRows = 10000;  // rows per cursor fetch while replaying

// One rebuilt counter, in a backend-local hash table keyed by counter key.
struct Rebuilt {
  core::Hash128 key;
  core::LimitRule rule;
  core::CounterState state;
};

bool alive(int32 pid) { return pid != 0 && (pid == MyProcPid || kill(pid, 0) == 0); }

std::string_view text_view(Datum d) {
  text* t = DatumGetTextPP(d);
  return std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

HTAB* create_states() {
  HASHCTL ctl;
  memset(&ctl, 0, sizeof ctl);
  ctl.keysize = sizeof(core::Hash128);
  ctl.entrysize = sizeof(Rebuilt);
  ctl.hcxt = CurrentMemoryContext;
  return hash_create("rate_limiter rebuilt counters", 1024, &ctl,
                     HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

struct ResetEntry {
  core::Hash128 key;  // a main counter's key
  int64 reset_at;     // us since the Unix epoch
};

// The resets committed since `since` (rate_limit_resets), by the key of
// each main counter they cleared.  nullptr when there are none.
HTAB* load_resets(const ExtensionCatalog* ext, int64 since) {
  const char* sql = psprintf(
      "SELECT scope, user_id, api_endpoint, reset_at FROM %s.rate_limit_resets "
      "WHERE reset_at >= $1",
      ext->quoted_schema);
  Oid types[1] = {TIMESTAMPTZOID};
  Datum values[1] = {TimestampTzGetDatum(unix_to_timestamptz(since))};
  if (SPI_execute_with_args(sql, 1, types, values, nullptr, true, 0) != SPI_OK_SELECT)
    elog(ERROR, "rate_limiter: could not read rate_limit_resets");
  if (SPI_processed == 0) return nullptr;
  HASHCTL ctl;
  memset(&ctl, 0, sizeof ctl);
  ctl.keysize = sizeof(core::Hash128);
  ctl.entrysize = sizeof(ResetEntry);
  ctl.hcxt = CurrentMemoryContext;
  HTAB* resets = hash_create("rate_limiter resets", Max(SPI_processed * 2, 16), &ctl,
                             HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
  for (uint64 i = 0; i < SPI_processed; ++i) {
    HeapTuple t = SPI_tuptable->vals[i];
    TupleDesc d = SPI_tuptable->tupdesc;
    bool null_scope = false, null_user = false, null_endpoint = false, null_at = false;
    const std::string_view scope_name = text_view(SPI_getbinval(t, d, 1, &null_scope));
    const Datum user = SPI_getbinval(t, d, 2, &null_user);
    const Datum endpoint = SPI_getbinval(t, d, 3, &null_endpoint);
    const Datum at = SPI_getbinval(t, d, 4, &null_at);
    if (null_scope || null_at) continue;
    core::ScopeKind kind = core::ScopeKind::User;
    if (scope_name == "user_endpoint") kind = core::ScopeKind::UserEndpoint;
    if (scope_name == "endpoint") kind = core::ScopeKind::Endpoint;
    // The counters of the committed rules that apply now: those the replay
    // charges.
    core::Hash128 keys[core::kLimitKinds];
    const int nkeys = main_counter_keys(ext, kind, null_user ? std::string_view() : text_view(user),
                                        null_endpoint ? std::string_view() : text_view(endpoint),
                                        RuleView::Committed, keys);
    for (int k = 0; k < nkeys; ++k) {
      const core::Hash128 key = keys[k];
      bool found = false;
      auto* e = static_cast<ResetEntry*>(hash_search(resets, &key, HASH_ENTER, &found));
      const int64 reset_at = timestamptz_to_unix(DatumGetTimestampTz(at));
      e->reset_at = found ? Max(e->reset_at, reset_at) : reset_at;
    }
  }
  SPI_freetuptable(SPI_tuptable);
  return resets;
}

// Charges one usage row to the counters its call would charge now, except
// the counters a later reset cleared.
void replay_row(HTAB* states, HTAB* resets, const ApplicableRules& rules, int64 at, int64 tokens) {
  core::Hash128 keys[2 * core::kMaxAppliedLimits];
  core::LimitRule limit_rules[2 * core::kMaxAppliedLimits];
  core::LimitKind kinds[2 * core::kMaxAppliedLimits];
  bool default_class[2 * core::kMaxAppliedLimits];
  // The rules as at the row: a calendar limit counts the row in the
  // period it fell in.
  const int n = applicable_counter_rules(rules, keys, limit_rules, kinds, default_class,
                                         2 * core::kMaxAppliedLimits, at);
  for (int i = 0; i < n; ++i) {
    bool found = false;
    if (resets != nullptr) {
      const auto* reset =
          static_cast<const ResetEntry*>(hash_search(resets, &keys[i], HASH_FIND, &found));
      if (found && at < reset->reset_at) continue;
    }
    auto* r = static_cast<Rebuilt*>(hash_search(states, &keys[i], HASH_ENTER, &found));
    if (!found) r->state = core::CounterState{};
    // The latest row's: a calendar period of an earlier row has ended, and
    // the counter holds the latest period's rows (merge() advances it).
    r->rule = limit_rules[i];
    // Unclamped: a row counts whole even when it exceeds the current rule
    // (granted under a limit lowered since, or from an emergency
    // allowance), as the live counter held it.
    core::charge_unclamped(r->rule, &r->state, kinds[i] == core::LimitKind::Tokens ? tokens : 1,
                           at);
  }
}

// Replays every usage row inside the installation's horizon, in time order.
HTAB* rebuild_installation(const ExtensionCatalog* ext, int64 now, uint64* rows) {
  HTAB* states = create_states();
  const uint64 horizon = pg_atomic_read_u64(&ext->slot->longest_horizon);
  if (horizon == 0) return states;  // no rule: nothing counts
  const int64 since = now - static_cast<int64>(Min(horizon, static_cast<uint64>(now)));
  HTAB* resets = load_resets(ext, since);
  // The rows a worker set aside (usage_batch_insert.hpp) were charged as
  // well: they count as if token_usage held them.
  const char* sql = psprintf(
      "SELECT u.\"timestamp\", u.tokens_used, u.user_id, u.api_endpoint FROM ("
      "SELECT t.\"timestamp\", t.tokens_used, t.user_id, t.api_endpoint "
      "FROM %s.token_usage t WHERE t.\"timestamp\" >= $1 UNION ALL "
      "SELECT l.\"timestamp\", l.tokens_used, l.user_id, l.api_endpoint "
      "FROM %s.token_usage_dead_letters l WHERE l.\"timestamp\" >= $1"
      ") u ORDER BY u.\"timestamp\"",
      ext->quoted_schema, ext->quoted_schema);
  Oid types[1] = {TIMESTAMPTZOID};
  SPIPlanPtr plan = SPI_prepare(sql, 1, types);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the usage replay");
  Datum values[1] = {TimestampTzGetDatum(unix_to_timestamptz(since))};
  Portal portal = SPI_cursor_open(nullptr, plan, values, nullptr, true);
  ApplicableRules rules;
  for (;;) {
    SPI_cursor_fetch(portal, true, kFetchRows);  // checks for interrupts
    if (SPI_processed == 0) break;
    for (uint64 i = 0; i < SPI_processed; ++i) {
      HeapTuple t = SPI_tuptable->vals[i];
      TupleDesc d = SPI_tuptable->tupdesc;
      bool null_at = false, null_tokens = false, null_user = false, null_endpoint = false;
      const Datum at = SPI_getbinval(t, d, 1, &null_at);
      const Datum tokens = SPI_getbinval(t, d, 2, &null_tokens);
      const Datum user = SPI_getbinval(t, d, 3, &null_user);
      const Datum endpoint = SPI_getbinval(t, d, 4, &null_endpoint);
      if (null_at || null_user) continue;
      // Committed rules only: the counters are shared by every session.
      collect_applicable_rules(ext, text_view(user), !null_endpoint,
                               null_endpoint ? std::string_view() : text_view(endpoint), &rules,
                               RuleView::Committed);
      replay_row(states, resets, rules, timestamptz_to_unix(DatumGetTimestampTz(at)),
                 null_tokens ? 0 : DatumGetInt64(tokens));
      ++*rows;
    }
    SPI_freetuptable(SPI_tuptable);  // keep memory bounded by one fetch
  }
  SPI_cursor_close(portal);
  SPI_freeplan(plan);
  return states;
}

// Merges rebuilt counters into shared memory: the state with less
// available wins, so nothing charged since (or by an earlier rebuild) is
// lost.  Plain arithmetic under each partition lock.
uint64 merge(HTAB* states, int64 now) {
  HASH_SEQ_STATUS scan;
  hash_seq_init(&scan, states);
  uint64 merged = 0;
  while (auto* r = static_cast<Rebuilt*>(hash_seq_search(&scan))) {
    core::CounterState state = core::advance(r->rule, r->state, now);
    if (core::state_expired(state, now)) continue;
    // A refund recorded before the rebuild must not reach it: the rebuilt
    // state holds the rows as they are now (a settled row its actual
    // usage), not the live charges (core::kRebuiltGeneration).
    core::CounterPartition::set_generation(&state, core::kRebuiltGeneration);
    const uint32 p = core::partition_of(r->key, shared->geometry.partitions);
    lock_partition(p, LW_EXCLUSIVE);
    core::CounterPartition part = counter_partition(p);
    const uint32 before = part.count();
    const core::CounterSlot* slot = part.find(r->key);
    if (slot == nullptr ||
        core::available(r->rule, state, now) < core::available(r->rule, slot->state, now))
      part.store(r->key, state, now);
    const uint32 after = part.count();
    unlock_partition(p);
    if (after > before) pg_atomic_fetch_add_u64(&shared->metrics.keys_in_use, after - before);
    ++merged;
  }
  return merged;
}

void set_state(InstallationSlot* slot, uint64 installation, CountersState state) {
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  if (slot->installation == installation) {
    slot->counters_state = state;
    slot->counters_rebuilder = 0;
  }
  LWLockRelease(installations_lock());
  ConditionVariableBroadcast(installations_changed());
}

void run_rebuild(const ExtensionCatalog* ext) {
  // The replay reads the committed rules from the shared rule table, so
  // they must be loaded; a transaction with a TRUNCATE of a rule table
  // pending cannot load them (prepare_rule_lookups()).
  if (ext->slot->rules_state != RulesState::Loaded || own_rules_reload_pending())
    ereport(ERROR,
            (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
             errmsg("rate_limiter counters of this database must be rebuilt first"),
             errdetail(
                 "After a crash or a promotion the counters are rebuilt from token_usage with the "
                 "committed rules; this transaction has a statement-level change to the rule "
                 "tables pending."),
             errhint("Commit or roll back, then retry.")));
  const TimestampTz started = GetCurrentTimestamp();
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  uint64 rows = 0;
  HTAB* states = rebuild_installation(ext, limiter_now_unix(), &rows);
  // Merge while the SPI memory (which holds the states) is still alive.
  const uint64 merged = merge(states, limiter_now_unix());
  SPI_finish();
  owner.restore();
  long secs;
  int usecs;
  TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
  ereport(LOG, (errmsg("rate_limiter: rebuilt " UINT64_FORMAT
                       " counters of database \"%s\" from " UINT64_FORMAT
                       " token_usage rows in %ld.%03d s",
                       merged, get_database_name(MyDatabaseId), rows, secs, usecs / 1000)));
}

}  // namespace

void ensure_counters_recovered(const ExtensionCatalog* ext) {
  // A standby has no counters of its own (it never decides), and rebuilding
  // there would mark the installation complete with rows that keep
  // arriving: refuse, and rebuild after promotion.
  if (RecoveryInProgress())
    ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                    errmsg("rate_limiter counters are kept on the primary server"),
                    errhint("Call the primary: quota is counted there.")));
  InstallationSlot* slot = ext->slot;
  if (slot->counters_state == CountersState::Complete) return;
  const uint64 installation = ext->installation;
  const TimestampTz deadline =
      TimestampTzPlusMilliseconds(GetCurrentTimestamp(), settings.recovery_timeout_ms);
  for (;;) {
    bool rebuild = false;
    LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
    const CountersState state = slot->counters_state;
    // A rebuilder that died without an error (FATAL, killed) left its claim
    // behind: take it over.
    if (state == CountersState::Unknown ||
        (state == CountersState::Rebuilding && !alive(slot->counters_rebuilder))) {
      slot->counters_state = CountersState::Rebuilding;
      slot->counters_rebuilder = MyProcPid;
      rebuild = true;
    }
    LWLockRelease(installations_lock());
    if (state == CountersState::Complete) return;
    if (rebuild) {
      PG_TRY();
      { run_rebuild(ext); }
      PG_CATCH();
      {
        set_state(slot, installation, CountersState::Unknown);  // let the next caller retry
        PG_RE_THROW();
      }
      PG_END_TRY();
      set_state(slot, installation, CountersState::Complete);
      return;
    }
    const bool moved = wait_for_installation_change(deadline, [&] {
      return slot->counters_state != CountersState::Rebuilding || !alive(slot->counters_rebuilder);
    });
    if (!moved)
      ereport(ERROR,
              (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
               errmsg("rate_limiter counters of this database are still being rebuilt"),
               errdetail("After a crash or a promotion the counters are rebuilt from token_usage "
                         "before the first decision."),
               errhint("Retry, or raise rate_limiter.recovery_timeout.")));
  }
}

}  // namespace rate_limiter::pg
