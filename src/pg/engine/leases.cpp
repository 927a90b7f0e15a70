#include "rate_limiter/pg/engine/leases.hpp"

#include "rate_limiter/pg/engine/hot_path.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter leases";
constexpr const char* kTrancheName = "rate_limiter_leases";

void* table_memory = nullptr;
LWLock* lock = nullptr;
bool exit_hook_registered = false;

Size table_bytes() { return core::LeaseTable::bytes_for(static_cast<uint32>(settings.max_leases)); }

// This backend is leaving: whatever it still holds is free again.
void release_at_exit(int, Datum) {
  if (table_memory == nullptr || lock == nullptr || MyProc == nullptr) return;
  LWLockAcquire(lock, LW_EXCLUSIVE);
  lease_table().release_owner(lease_owner());
  LWLockRelease(lock);
}

// ---- EffectKind::Lease (transaction_log.hpp) ----

enum class LeaseMode : uint8 {
  None,         // disarmed
  AtAbort,      // the call's charge follows the transaction: its leases too
  UnlessBound,  // the call's grant has no id yet: an abort before it has
                // one leaves nothing to settle, so the leases end
  AtCommit,     // settle: the grant's leases end at commit
};

struct LeaseEffect {
  LeaseMode mode;
  core::Hash128 grant;
  CallLeases leases;
};

void end_effect(const LeaseEffect& e) noexcept {
  LWLockAcquire(lock, LW_EXCLUSIVE);
  core::LeaseTable t = lease_table();
  if (e.mode == LeaseMode::AtCommit) {
    t.release_grant(e.grant);
  } else {
    for (int i = 0; i < e.leases.count; ++i) t.release(e.leases.handles[i]);
  }
  LWLockRelease(lock);
}

void at_commit(Effect& e) {
  const LeaseEffect& l = e.as<LeaseEffect>();
  if (l.mode == LeaseMode::AtCommit) end_effect(l);
}

void at_abort(Effect& e) {
  const LeaseEffect& l = e.as<LeaseEffect>();
  if (l.mode == LeaseMode::AtAbort || l.mode == LeaseMode::UnlessBound) end_effect(l);
}

// A ROLLBACK TO SAVEPOINT ends the leases of the calls made since, as it
// refunds their charges; a settle rolled back releases nothing.
bool rolled_back(Effect& e) {
  at_abort(e);
  return false;
}

// A settle's release would have to happen at a COMMIT PREPARED in another
// session, which these callbacks cannot follow: PREPARE is refused, as for
// the settle's refunds (transaction_effects.hpp).  An abort-time release
// is dropped at PREPARE, as the abort-time refunds are: the lease then
// ends by settle, exit or timeout.
bool blocks_prepare(const Effect& e) { return e.as<LeaseEffect>().mode == LeaseMode::AtCommit; }

constexpr EffectHandlers kHandlers = {
    blocks_prepare, "cannot PREPARE a transaction that settled tokens",
    at_commit,      nullptr,
    at_abort,       rolled_back,
    nullptr,        nullptr,
    nullptr,
};

void record(const LeaseEffect& l) { record_effect(EffectKind::Lease)->as<LeaseEffect>() = l; }

}  // namespace

SegmentRequest lease_segment() { return {kSegmentName, table_bytes(), kTrancheName, 1}; }

void attach_lease_memory() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  table_memory = ShmemInitStruct(kSegmentName, table_bytes(), &found);
  if (!found) core::LeaseTable::initialize(table_memory, static_cast<uint32>(settings.max_leases));
  lock = &GetNamedLWLockTranche(kTrancheName)[0].lock;
  LWLockRelease(AddinShmemInitLock);
}

void lock_leases() noexcept { LWLockAcquire(lock, LW_EXCLUSIVE); }
void unlock_leases() noexcept { LWLockRelease(lock); }
core::LeaseTable lease_table() noexcept { return core::LeaseTable(table_memory); }
int32 lease_owner() noexcept { return MyProc != nullptr ? MyProc->pgprocno : -1; }

void ensure_lease_exit_hook() {
  if (exit_hook_registered) return;
  before_shmem_exit(release_at_exit, 0);
  exit_hook_registered = true;
}

core::Hash128 lease_grant_key(uint64 installation, int64 allocation_id) noexcept {
  return core::Hash128{installation, static_cast<uint64>(allocation_id)};
}

void bind_call_leases(const CallLeases& leases, const core::Hash128& grant) noexcept {
  if (leases.count == 0) return;
  LWLockAcquire(lock, LW_EXCLUSIVE);
  core::LeaseTable t = lease_table();
  for (int i = 0; i < leases.count; ++i) t.bind(leases.handles[i], grant);
  LWLockRelease(lock);
}

void release_leases_on_abort(const CallLeases& leases) {
  if (leases.count == 0) return;
  LeaseEffect l{};
  l.mode = LeaseMode::AtAbort;
  l.leases = leases;
  record(l);
}

uint32 release_leases_unless_bound(const CallLeases& leases) {
  if (leases.count == 0) return 0;
  const uint32 seq = effect_log_mark();
  LeaseEffect l{};
  l.mode = LeaseMode::UnlessBound;
  l.leases = leases;
  record(l);
  return seq + 1;
}

void leases_bound(uint32 mark) noexcept {
  if (mark == 0) return;
  if (Effect* e = effect_by_seq(EffectKind::Lease, mark - 1)) {
    LeaseEffect& l = e->as<LeaseEffect>();
    if (l.mode == LeaseMode::UnlessBound) l.mode = LeaseMode::None;
  }
}

void reserve_lease_effects() { reserve_effects(EffectKind::Lease, 2); }

void release_grant_leases_at_commit(const core::Hash128& grant) {
  // A grant without leases (no concurrency limit applied, or they ended)
  // records nothing, and so leaves PREPARE allowed.  None can be bound to
  // it later: a lease is bound before its grant's id is returned.
  LWLockAcquire(lock, LW_EXCLUSIVE);
  const bool any = lease_table().has_grant(grant);
  LWLockRelease(lock);
  if (!any) return;
  LeaseEffect l{};
  l.mode = LeaseMode::AtCommit;
  l.grant = grant;
  record(l);
}

int32 leases_in_flight(const core::Hash128& lease_scope, int64 now, int64* earliest) noexcept {
  LWLockAcquire(lock, LW_EXCLUSIVE);
  // A limit of 0 is always full: room() sweeps whatever has expired, and
  // then its retry_at is the exact earliest expiry of what is left.
  const core::LeaseRoom r = lease_table().room(lease_scope, 0, now);
  LWLockRelease(lock);
  *earliest = r.in_flight > 0 ? r.retry_at : 0;
  return r.in_flight;
}

void release_installation_leases(uint16 tag) noexcept {
  LWLockAcquire(lock, LW_EXCLUSIVE);
  lease_table().release_group(tag);
  LWLockRelease(lock);
}

void register_lease_effects() { register_effect_kind(EffectKind::Lease, &kHandlers); }

}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// rate_limiter_in_flight(user_id, api_endpoint) -> (in_flight, next_expiry):
// the live leases of one scope's concurrency limit (get_rate_limit_status).
RL_SQL_FUNCTION(rate_limiter_in_flight) {
  require_shared_state();
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("user_id must not be NULL")));
  const ExtensionCatalog* ext = extension_catalog();
  text* user = PG_GETARG_TEXT_PP(0);
  const core::Hash128 user_scope = scope_of(
      ext, core::ScopeKind::User, std::string_view(VARDATA_ANY(user), VARSIZE_ANY_EXHDR(user)), {});
  core::Hash128 scope = user_scope;
  if (!PG_ARGISNULL(1)) {
    text* endpoint = PG_GETARG_TEXT_PP(1);
    scope = user_endpoint_scope_of(
        ext, user_scope, std::string_view(VARDATA_ANY(endpoint), VARSIZE_ANY_EXHDR(endpoint)));
  }
  int64 earliest = 0;
  const int32 n = leases_in_flight(concurrency_key(scope), limiter_now_unix(), &earliest);
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "return type must be a row type");
  Datum values[2] = {Int32GetDatum(n), TimestampTzGetDatum(unix_to_timestamptz(earliest))};
  bool nulls[2] = {false, earliest == 0};
  return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}

// rate_limiter_leases() -> (allocation_id, pid, acquired_at, expires_at):
// the leases of this installation, copied under the lock (into memory
// allocated before it) and returned after.
RL_SQL_FUNCTION(rate_limiter_leases) {
  require_shared_state();
  const ExtensionCatalog* ext = extension_catalog();
  InitMaterializedSRF(fcinfo, 0);
  ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  // Room for the leases in use now (plus some taken meanwhile), allocated
  // before the lock; a shared lock for the copy, which only reads.
  LWLockAcquire(lock, LW_SHARED);
  const uint32 room = lease_table().used() + 64;
  LWLockRelease(lock);
  auto* copy = static_cast<core::Lease*>(palloc(sizeof(core::Lease) * room));
  uint32 n = 0;
  const int64 now = limiter_now_unix();
  LWLockAcquire(lock, LW_SHARED);
  core::LeaseTable t = lease_table();
  for (uint32 i = 0; i < t.capacity() && n < room; ++i) {
    const core::Lease& l = t.lease_at(i);
    if (l.scope.is_zero() || l.group != ext->tag || l.expires_at <= now) continue;
    copy[n++] = l;
  }
  LWLockRelease(lock);
  for (uint32 i = 0; i < n; ++i) {
    const core::Lease& l = copy[i];
    const bool bound = l.grant.hi == ext->installation && !l.grant.is_zero();
    Datum values[4] = {Int64GetDatum(static_cast<int64>(l.grant.lo)), Int32GetDatum(l.owner_pid),
                       TimestampTzGetDatum(unix_to_timestamptz(l.taken_at)),
                       TimestampTzGetDatum(unix_to_timestamptz(l.expires_at))};
    bool nulls[4] = {!bound, false, false, false};
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return (Datum)0;
}
