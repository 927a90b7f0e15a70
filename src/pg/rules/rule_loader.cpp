#include "rate_limiter/pg/rules/rule_loader.hpp"

#include <csignal>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/rules/concurrency_limits.hpp"
#include "rate_limiter/pg/rules/parent_links.hpp"
#include "rate_limiter/pg/rules/rule_table.hpp"
#include "rate_limiter/pg/rules/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr long kFetchRows = 10000;  // rows per cursor fetch while loading

bool alive(int32 pid) { return pid != 0 && (pid == MyProcPid || kill(pid, 0) == 0); }

void raise_max(pg_atomic_uint64* target, uint64 value) {
  uint64 current = pg_atomic_read_u64(target);
  while (value > current && !pg_atomic_compare_exchange_u64(target, &current, value)) {
  }
}

core::ScopeKind scope_kind_of(bool has_user, bool has_endpoint) {
  if (has_user) return has_endpoint ? core::ScopeKind::UserEndpoint : core::ScopeKind::User;
  return has_endpoint ? core::ScopeKind::Endpoint : core::ScopeKind::Default;
}

std::string_view view_of(text* t) {
  return t == nullptr ? std::string_view() : std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

// Reads one rule table through a cursor and inserts what the shared table
// lacks.  False when a reset moved the epoch on (the load is void).
bool load_table(const ExtensionCatalog* ext, InstallationSlot* slot, Oid relid,
                core::LimitKind kind, uint64 epoch, uint64* loaded) {
  const char* sql =
      psprintf("SELECT * FROM %s.%s", ext->quoted_schema, quote_identifier(get_rel_name(relid)));
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the rule load");
  // read_only: the portal runs on the active snapshot, the one
  // load_rules() pushed.
  Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, true);
  if (settings.debug_rule_load_delay_ms > 0 && kind == core::LimitKind::Tokens)
    pg_usleep(settings.debug_rule_load_delay_ms * 1000L);
  RuleColumns columns;
  bool bound = false;
  bool valid = true;
  for (;;) {
    SPI_cursor_fetch(portal, true, kFetchRows);  // checks for interrupts
    if (SPI_processed == 0) break;
    if (!bound) {
      columns.bind(SPI_tuptable->tupdesc, kind);
      bound = true;
    }
    for (uint64 i = 0; i < SPI_processed && valid; ++i) {
      HeapTuple tuple = SPI_tuptable->vals[i];
      text* user = nullptr;
      text* endpoint = nullptr;
      columns.ids(tuple, &user, &endpoint);
      const core::Hash128 key =
          core::counter_key(scope_of(ext, scope_kind_of(user != nullptr, endpoint != nullptr),
                                     view_of(user), view_of(endpoint)),
                            kind);
      const core::RuleRecord record = columns.record(tuple);
      bool stale = false;
      const core::RuleWrite w = rule_table_load(key, record, &slot->rules_epoch, epoch, &stale);
      if (stale) valid = false;
      note_rule_write(slot, w, record);
      if (w == core::RuleWrite::Inserted) ++*loaded;
    }
    SPI_freetuptable(SPI_tuptable);  // memory bounded by one fetch
    if (!valid) break;
  }
  SPI_cursor_close(portal);
  SPI_freeplan(plan);
  return valid;
}

// Reads concurrency_limits the same way: one record per row.
bool load_concurrency(const ExtensionCatalog* ext, InstallationSlot* slot, uint64 epoch,
                      uint64* loaded) {
  if (!OidIsValid(ext->concurrency_limits)) return true;  // a script is creating it
  const char* sql = psprintf(
      "SELECT user_id, api_endpoint, max_in_flight, lease_timeout FROM %s.concurrency_limits",
      ext->quoted_schema);
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the concurrency limit load");
  Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, true);
  bool valid = true;
  for (;;) {
    SPI_cursor_fetch(portal, true, kFetchRows);
    if (SPI_processed == 0) break;
    for (uint64 i = 0; i < SPI_processed && valid; ++i) {
      core::Hash128 key;
      core::RuleRecord record;
      if (!concurrency_row(ext, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &key, &record, true))
        continue;
      bool stale = false;
      const core::RuleWrite w = rule_table_load(key, record, &slot->rules_epoch, epoch, &stale);
      if (stale) valid = false;
      note_rule_write(slot, w, record);
      if (w == core::RuleWrite::Inserted) ++*loaded;
    }
    SPI_freetuptable(SPI_tuptable);
    if (!valid) break;
  }
  SPI_cursor_close(portal);
  SPI_freeplan(plan);
  return valid;
}

// Reads rate_limit_parents the same way: one record per link.
bool load_links(const ExtensionCatalog* ext, InstallationSlot* slot, uint64 epoch, uint64* loaded) {
  if (!OidIsValid(ext->rate_limit_parents)) return true;  // a script is creating it
  const char* sql =
      psprintf("SELECT child_id, parent_id FROM %s.rate_limit_parents", ext->quoted_schema);
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the parent load");
  Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, true);
  bool valid = true;
  for (;;) {
    SPI_cursor_fetch(portal, true, kFetchRows);
    if (SPI_processed == 0) break;
    for (uint64 i = 0; i < SPI_processed && valid; ++i) {
      bool child_null = false, parent_null = false;
      const Datum child =
          SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &child_null);
      const Datum parent =
          SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &parent_null);
      if (child_null || parent_null) continue;
      LinkRecords records;
      link_records(ext, view_of(DatumGetTextPP(child)), view_of(DatumGetTextPP(parent)), &records);
      for (int r = 0; r < records.count && valid; ++r) {
        bool stale = false;
        const core::RuleWrite w =
            rule_table_load(records.keys[r], records.records[r], &slot->rules_epoch, epoch, &stale);
        if (stale) valid = false;
        note_rule_write(slot, w, records.records[r]);
        if (w == core::RuleWrite::Inserted) ++*loaded;
      }
    }
    SPI_freetuptable(SPI_tuptable);
    if (!valid) break;
  }
  SPI_cursor_close(portal);
  SPI_freeplan(plan);
  return valid;
}

// Runs the load this session claimed.  Errors propagate; the caller
// abandons the claim.
bool load_rules(const ExtensionCatalog* ext, InstallationSlot* slot, uint64 epoch, uint64* loaded) {
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  // A snapshot taken now, after the claim: every commit it misses applies
  // itself to the table (it sees Loading).  curcid 0 hides this
  // transaction's own uncommitted rule changes, which must not reach other
  // sessions through the shared table (the overlay serves them here).
  PushActiveSnapshot(GetLatestSnapshot());
  GetActiveSnapshot()->curcid = FirstCommandId;
  bool valid =
      load_table(ext, slot, ext->token_limits, core::LimitKind::Tokens, epoch, loaded) &&
      load_table(ext, slot, ext->request_limits, core::LimitKind::Requests, epoch, loaded) &&
      load_links(ext, slot, epoch, loaded) && load_concurrency(ext, slot, epoch, loaded);
  PopActiveSnapshot();
  SPI_finish();
  owner.restore();
  return valid;
}

enum class Claim { Done, Load, Wait, Reset };

}  // namespace

void note_rule_write(InstallationSlot* slot, core::RuleWrite write,
                     const core::RuleRecord& record) noexcept {
  if (is_parent_link(record) && pg_atomic_read_u32(&slot->has_parent_links) == 0)
    pg_atomic_write_u32(&slot->has_parent_links, 1);
  if (is_concurrency_record(record) && pg_atomic_read_u32(&slot->has_concurrency_limits) == 0)
    pg_atomic_write_u32(&slot->has_concurrency_limits, 1);
  switch (write) {
    case core::RuleWrite::Inserted:
      pg_atomic_fetch_add_u64(&slot->rule_count, 1);
      raise_max(&slot->longest_horizon, static_cast<uint64>(replay_horizon(record)));
      break;
    case core::RuleWrite::Updated:
      raise_max(&slot->longest_horizon, static_cast<uint64>(replay_horizon(record)));
      break;
    case core::RuleWrite::Full:
      // Looked up in the rule tables from now on (rule_lookup.hpp).
      if (pg_atomic_read_u32(&slot->rules_overflowed) == 0)
        pg_atomic_write_u32(&slot->rules_overflowed, 1);
      raise_max(&slot->longest_horizon, static_cast<uint64>(replay_horizon(record)));
      break;
    case core::RuleWrite::Present:
      break;
  }
}

void note_rule_removed(InstallationSlot* slot) noexcept {
  pg_atomic_fetch_sub_u64(&slot->rule_count, 1);
}

void reset_installation_rules(InstallationSlot* slot) noexcept {
  const uint64 installation = slot->installation;
  uint16 tag = 0;
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  if (slot->installation == installation && !slot->dropping) {
    // Loads that run now are void from here on: their writes are refused.
    pg_atomic_fetch_add_u64(&slot->rules_epoch, 1);
    slot->rules_state = RulesState::Resetting;
    slot->rules_loader = 0;
    tag = slot->tag;
  }
  LWLockRelease(installations_lock());
  if (tag == 0) return;
  rule_table_sweep_tag(tag);
  LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
  if (slot->installation == installation) {
    pg_atomic_write_u64(&slot->rule_count, 0);
    pg_atomic_write_u32(&slot->rules_overflowed, 0);
    pg_atomic_write_u32(&slot->has_parent_links, 0);
    pg_atomic_write_u32(&slot->has_concurrency_limits, 0);
    pg_atomic_write_u32(&slot->rules_load_invalid, 0);
    pg_atomic_write_u64(&slot->longest_horizon, 0);
    pg_atomic_fetch_add_u64(&slot->rule_changes, 1);
    slot->rules_state = RulesState::NotLoaded;
  }
  LWLockRelease(installations_lock());
  ConditionVariableBroadcast(installations_changed());
}

void ensure_rules_loaded(const ExtensionCatalog* ext) {
  InstallationSlot* slot = ext->slot;
  // The common case, without the lock: Loaded is only left by a reset,
  // which a call racing with it may miss once (as a call racing with the
  // commit of a rule change may use the old rule).
  if (slot->rules_state == RulesState::Loaded) return;
  const TimestampTz deadline =
      TimestampTzPlusMilliseconds(GetCurrentTimestamp(), settings.recovery_timeout_ms);
  for (;;) {
    Claim claim = Claim::Wait;
    uint64 epoch = 0;
    LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
    switch (slot->rules_state) {
      case RulesState::Loaded:
        claim = Claim::Done;
        break;
      case RulesState::NotLoaded:
        claim = Claim::Load;
        break;
      case RulesState::Loading:
        // An interrupted load (its session failed or is gone) is carried on;
        // one that could not record a change is reset first.
        if (!alive(slot->rules_loader))
          claim = pg_atomic_read_u32(&slot->rules_load_invalid) != 0 ? Claim::Reset : Claim::Load;
        break;
      case RulesState::Resetting:
        break;
    }
    if (claim == Claim::Load) {
      slot->rules_state = RulesState::Loading;
      slot->rules_loader = MyProcPid;
      epoch = pg_atomic_read_u64(&slot->rules_epoch);
    }
    LWLockRelease(installations_lock());

    if (claim == Claim::Done) return;
    if (claim == Claim::Reset) {
      reset_installation_rules(slot);
      continue;
    }
    if (claim == Claim::Load) {
      const TimestampTz started = GetCurrentTimestamp();
      uint64 loaded = 0;
      bool valid = false;
      PG_TRY();
      { valid = load_rules(ext, slot, epoch, &loaded); }
      PG_CATCH();
      {
        // Abandon the claim; what was inserted stays valid (commits keep it
        // current), and the next session carries on.
        LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
        if (slot->rules_loader == MyProcPid) slot->rules_loader = 0;
        LWLockRelease(installations_lock());
        ConditionVariableBroadcast(installations_changed());
        PG_RE_THROW();
      }
      PG_END_TRY();
      bool finished = false;
      bool invalid = false;
      LWLockAcquire(installations_lock(), LW_EXCLUSIVE);
      if (valid && slot->rules_state == RulesState::Loading && slot->rules_loader == MyProcPid &&
          pg_atomic_read_u64(&slot->rules_epoch) == epoch) {
        invalid = pg_atomic_read_u32(&slot->rules_load_invalid) != 0;
        if (!invalid) {
          slot->rules_state = RulesState::Loaded;
          finished = true;
        }
        slot->rules_loader = 0;
      }
      LWLockRelease(installations_lock());
      if (finished) {
        // No commit writes tombstones once Loaded is visible (they read the
        // state under the lock).
        rule_table_sweep_tombstones(ext->tag, &slot->rules_epoch, epoch);
        ConditionVariableBroadcast(installations_changed());
        long secs;
        int usecs;
        TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
        ereport(
            DEBUG1,
            (errmsg(
                "rate_limiter: loaded " UINT64_FORMAT " rules of database \"%s\" in %ld.%03d s%s",
                loaded, get_database_name(MyDatabaseId), secs, usecs / 1000,
                pg_atomic_read_u32(&slot->rules_overflowed) != 0
                    ? " (rate_limiter.max_rules is too small: the rest are read from the tables)"
                    : "")));
        return;
      }
      if (invalid) reset_installation_rules(slot);
      continue;  // reset or voided meanwhile: look again
    }
    // Another session is loading or resetting: wait for it.
    const bool moved = wait_for_installation_change(deadline, [&] {
      const RulesState s = slot->rules_state;
      return s == RulesState::Loaded || s == RulesState::NotLoaded ||
             (s == RulesState::Loading && !alive(slot->rules_loader));
    });
    if (!moved)
      ereport(ERROR, (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                      errmsg("rate_limiter rules of this database are still being loaded"),
                      errdetail("Another session is loading them into shared memory."),
                      errhint("Retry, or raise rate_limiter.recovery_timeout.")));
  }
}

}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// rule_table_status() -> (state, rules, overflowed, rules_total, capacity,
//                         tombstones)
// This database's rules in the shared rule table: not_loaded, loading,
// loaded or resetting; the records it holds; whether some rules are read
// from their table (rate_limiter.max_rules too small); and the records of
// every database and the table's capacity.
RL_SQL_FUNCTION(rule_table_status) {
  require_shared_state();
  const ExtensionCatalog* ext = extension_catalog();
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");
  static const char* const kStates[] = {"not_loaded", "loading", "loaded", "resetting"};
  InstallationSlot* slot = ext->slot;
  const auto state = static_cast<uint32>(slot->rules_state);
  const RuleTableStats stats = rule_table_stats();
  Datum values[6] = {CStringGetTextDatum(state < 4 ? kStates[state] : "unknown"),
                     Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&slot->rule_count))),
                     BoolGetDatum(pg_atomic_read_u32(&slot->rules_overflowed) != 0),
                     Int64GetDatum(static_cast<int64>(stats.live)),
                     Int64GetDatum(static_cast<int64>(stats.capacity)),
                     Int64GetDatum(static_cast<int64>(stats.tombstones))};
  bool nulls[6] = {false, false, false, false, false, false};
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}
