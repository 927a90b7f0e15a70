#include "rate_limiter/pg/rule_cache.hpp"

#include <boost/container/flat_map.hpp>

#include <algorithm>
#include <memory>
#include <string_view>

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/extension_catalog.hpp"
#include "rate_limiter/pg/shared_state.hpp"

namespace rate_limiter::pg {
namespace {

using RuleMap = boost::container::flat_map<core::Hash128, ScopeRules>;

// One row of the rule tables, already hashed: the plain-data handoff between
// the SQL side (which can ereport) and the C++ side (which can throw).
struct RuleRow {
  core::Hash128 scope;
  core::LimitKind kind;
  core::LimitRule rule;
};

// Owned through a raw pointer on purpose: a static object with a destructor
// would run at process exit, after PostgreSQL's own shutdown code.
RuleMap* rules = nullptr;
uint64 loaded_generation = 0;  // 0: not loaded / invalidated
uint64 loaded_installation = 0;
core::Hash128 default_scope;
// Bumped by every invalidation.  A load during which it moved (the relation
// locks taken by the load process invalidation messages) is not trusted.
uint64 invalidations = 0;

// Builds the new map before swapping it in, so a bad_alloc leaves the old
// (invalidated) cache untouched.  Throws; runs no PostgreSQL code.
void rebuild(const RuleRow* rows, std::size_t n) {
  std::unique_ptr<RuleMap> fresh(new RuleMap());
  fresh->reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    ScopeRules& entry = (*fresh)[rows[i].scope];
    const int k = static_cast<int>(rows[i].kind);
    entry.has[k] = true;
    entry.rule[k] = rows[i].rule;
  }
  delete rules;
  rules = fresh.release();
}

core::ScopeKind scope_kind_of(bool has_user, bool has_endpoint) {
  if (has_user) return has_endpoint ? core::ScopeKind::UserEndpoint : core::ScopeKind::User;
  return has_endpoint ? core::ScopeKind::Endpoint : core::ScopeKind::Default;
}

std::string_view text_view(Datum d) {
  text* t = DatumGetTextPP(d);
  return std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

// Reads both rule tables with the latest snapshot (not the transaction's:
// a REPEATABLE READ transaction must still see rules committed after it
// began).  Returns a palloc'd array in the caller's memory context.
RuleRow* load_rule_rows(std::size_t* nrows, uint64* installation) {
  const ExtensionCatalog* ext = extension_catalog();
  *installation = ext->installation;
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT 0, user_id, api_endpoint, max_tokens_per_period, period_interval "
           "FROM %s.token_limits "
           "UNION ALL "
           "SELECT 1, user_id, api_endpoint, max_requests_per_window, window_duration "
           "FROM %s.request_limits",
           ext->quoted_schema, ext->quoted_schema);

  MemoryContext caller = CurrentMemoryContext;
  AsExtensionOwner owner(ext);
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "rate_limiter: SPI_connect failed");
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "rate_limiter: could not prepare the rule query");
  int rc = SPI_execute_snapshot(plan, nullptr, nullptr, GetLatestSnapshot(), InvalidSnapshot,
                                true, false, 0);
  if (rc != SPI_OK_SELECT) elog(ERROR, "rate_limiter: rule query failed: %s", SPI_result_code_string(rc));

  const std::size_t n = SPI_processed;
  auto* rows = static_cast<RuleRow*>(
      MemoryContextAllocHuge(caller, std::max<std::size_t>(n, 1) * sizeof(RuleRow)));
  const core::SipKey key = shared->hash_key;
  for (std::size_t i = 0; i < n; ++i) {
    HeapTuple tuple = SPI_tuptable->vals[i];
    TupleDesc desc = SPI_tuptable->tupdesc;
    bool isnull[5];
    Datum v[5];
    for (int c = 0; c < 5; ++c) v[c] = SPI_getbinval(tuple, desc, c + 1, &isnull[c]);
    const bool has_user = !isnull[1];
    const bool has_endpoint = !isnull[2];
    std::string_view user = has_user ? text_view(v[1]) : std::string_view();
    std::string_view endpoint = has_endpoint ? text_view(v[2]) : std::string_view();
    rows[i].scope = core::scope_hash(key, ext->installation, scope_kind_of(has_user, has_endpoint),
                                     user, endpoint);
    rows[i].kind = DatumGetInt32(v[0]) == 0 ? core::LimitKind::Tokens : core::LimitKind::Requests;
    // The tables' CHECK constraints keep both values in range; clamping only
    // guards against constraints dropped by hand.
    rows[i].rule.limit = std::clamp<int64>(DatumGetInt64(v[3]), 1, core::kMaxQuantity);
    rows[i].rule.window_micros = std::clamp<int64>(interval_to_micros(DatumGetIntervalP(v[4])),
                                                   core::kMinWindowMicros, core::kMaxWindowMicros);
  }
  SPI_finish();
  owner.restore();
  *nrows = n;
  return rows;
}

}  // namespace

int64 interval_to_micros(const Interval* interval) {
  // Same arithmetic as interval_cmp_value(); the inputs are bounded by the
  // callers' validation, and __int128 keeps absurd ones from overflowing.
  const __int128 total = static_cast<__int128>(interval->time) +
                         static_cast<__int128>(interval->day) * USECS_PER_DAY +
                         static_cast<__int128>(interval->month) * DAYS_PER_MONTH * USECS_PER_DAY;
  if (total > PG_INT64_MAX) return PG_INT64_MAX;
  if (total < PG_INT64_MIN) return PG_INT64_MIN;
  return static_cast<int64>(total);
}

void ensure_rules_current() {
  const uint64 generation = pg_atomic_read_u64(&shared->rules_generation);
  if (rules != nullptr && loaded_generation == generation) return;
  // Read the generation before the snapshot is taken: a commit counted in
  // `generation` is then visible to the snapshot.
  pg_memory_barrier();
  const uint64 invalidations_before = invalidations;
  std::size_t n = 0;
  uint64 installation = 0;
  RuleRow* rows = load_rule_rows(&n, &installation);
  rebuild(rows, n);  // may throw; the boundary guard turns that into ERROR
  pfree(rows);
  loaded_installation = installation;
  default_scope = core::scope_hash(shared->hash_key, installation, core::ScopeKind::Default, {}, {});
  // Use what was loaded for this call, but load again next time if the
  // extension's catalog entry or the rules were invalidated meanwhile.
  loaded_generation = invalidations == invalidations_before ? generation : 0;
}

const ScopeRules* find_scope_rules(const core::Hash128& scope) {
  auto it = rules->find(scope);
  return it == rules->end() ? nullptr : &it->second;
}

bool rule_cache_empty() { return rules->empty(); }

uint64 rules_installation() { return loaded_installation; }

const core::Hash128& default_scope_hash() { return default_scope; }

void invalidate_rule_cache() {
  loaded_generation = 0;
  ++invalidations;
}

}  // namespace rate_limiter::pg
