#include "rate_limiter/pg/workers/reclaim.hpp"

#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/revocations.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/workers/database_worker.hpp"

namespace rate_limiter::pg {
namespace {

object_access_hook_type previous_object_access_hook = nullptr;

// A drop this transaction made, reclaimed at its commit.
struct PendingDrop {
  uint64 installation;  // 0: every installation of `database`
  Oid database;
  SubTransactionId subxact;
};

constexpr int kMaxPendingDrops = 16;
PendingDrop pending[kMaxPendingDrops];
int pending_count = 0;

void note_drop(uint64 installation, Oid database) {
  if (pending_count == kMaxPendingDrops) {
    // More drops in one transaction than this: the rest is reclaimed lazily
    // (the next installation of the database reclaims the stale slot).
    return;
  }
  pending[pending_count++] = PendingDrop{installation, database, GetCurrentSubTransactionId()};
}

void on_object_access(ObjectAccessType access, Oid class_id, Oid object_id, int sub_id, void* arg) {
  if (previous_object_access_hook != nullptr)
    previous_object_access_hook(access, class_id, object_id, sub_id, arg);
  if (access != OAT_DROP || shared == nullptr) return;
  if (class_id == ExtensionRelationId) {
    // The hook runs before the catalog row goes: the name is still there.
    if (get_extension_oid("rate_limiter", true) == object_id)
      note_drop((static_cast<uint64>(MyDatabaseId) << 32) | object_id, MyDatabaseId);
  } else if (class_id == DatabaseRelationId) {
    note_drop(0, object_id);
  }
}

void on_xact_event(XactEvent event, void*) {
  if (pending_count == 0) return;
  if (event == XACT_EVENT_COMMIT) {
    for (int i = 0; i < pending_count; ++i) {
      const PendingDrop& d = pending[i];
      if (d.installation != 0) {
        if (InstallationSlot* slot = find_installation(d.installation)) reclaim_installation(slot);
      } else {
        reclaim_database(d.database);
      }
    }
    pending_count = 0;
  } else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE) {
    // A prepared DROP EXTENSION is reclaimed lazily, like a missed one.
    pending_count = 0;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event != SUBXACT_EVENT_ABORT_SUB) return;
  int kept = 0;
  for (int i = 0; i < pending_count; ++i)
    if (pending[i].subxact < subxact) pending[kept++] = pending[i];
  pending_count = kept;
}

}  // namespace

InstallationSlot* register_installation(uint64 installation) {
  bool share_database = false;
  for (int attempt = 0; attempt < kMaxInstallationSlots; ++attempt) {
    InstallationSlot* stale = nullptr;
    if (InstallationSlot* slot = try_register_installation(installation, share_database, &stale))
      return slot;
    if (stale == nullptr) break;
    // Another installation of this database.  Reclaim it only if its
    // extension is gone for good: a drop by this very transaction (BEGIN;
    // DROP EXTENSION; CREATE EXTENSION; ...) is not, until it commits (the
    // drop hook reclaims it then), nor is one that another session is
    // still creating.  Otherwise both keep a slot for now.
    if (extension_committed_gone(static_cast<Oid>(stale->installation & 0xffffffffu)))
      reclaim_installation(stale);
    else
      share_database = true;
  }
  ereport(ERROR,
          (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
           errmsg("rate_limiter serves at most %u databases at a time", installation_capacity()),
           errdetail("Every slot is held by a database where the extension is installed."),
           errhint("Raise rate_limiter.max_databases (takes a restart), or drop the extension "
                   "where it is not used.")));
  pg_unreachable();
}

bool extension_committed_gone(Oid extension) {
  // A fresh snapshot with curcid 0: what has committed, without this
  // transaction's own changes (as the rule loader reads).
  Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
  snapshot->curcid = FirstCommandId;
  Relation rel = table_open(ExtensionRelationId, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
              ObjectIdGetDatum(extension));
  SysScanDesc scan = systable_beginscan(rel, ExtensionOidIndexId, true, snapshot, 1, &key);
  const bool gone = !HeapTupleIsValid(systable_getnext(scan));
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  UnregisterSnapshot(snapshot);
  return gone;
}

void reclaim_abandoned_installations(Oid database, uint64 keep) {
  InstallationSlot* slots = installation_slots();
  const TimestampTz now = GetCurrentTimestamp();
  for (int i = 0; i < installation_slot_count(); ++i) {
    InstallationSlot& s = slots[i];
    const uint64 installation = s.installation;
    if (installation == 0 || installation == keep || s.dropping ||
        static_cast<Oid>(installation >> 32) != database)
      continue;
    // A grace period for a CREATE EXTENSION still under way elsewhere.
    if (!TimestampDifferenceExceeds(s.registered_at, now, kAbandonedGraceMs)) continue;
    if (extension_committed_gone(static_cast<Oid>(installation & 0xffffffffu)) &&
        s.installation == installation)
      reclaim_installation(&s);
  }
}

uint64 reclaim_installation(InstallationSlot* slot) noexcept {
  const uint64 installation = slot->installation;
  const uint16 tag = begin_installation_reclaim(slot);
  if (tag == 0) return 0;  // not live, or another session is reclaiming it
  uint64 removed = 0;
  for (uint32 p = 0; p < shared->geometry.partitions; ++p) {
    lock_partition(p, LW_EXCLUSIVE);
    removed += counter_partition(p).sweep_tag(tag);
    unlock_partition(p);
  }
  if (removed > 0) pg_atomic_fetch_sub_u64(&shared->metrics.keys_in_use, removed);
  rule_table_sweep_tag(tag);
  release_installation_leases(tag);
  forget_revocations_of(installation);
  release_installation_worker(slot);
  free_installation_slot(slot);
  return removed;
}

void reclaim_database(Oid database) noexcept {
  InstallationSlot* slots = installation_slots();
  for (int i = 0; i < installation_slot_count(); ++i) {
    const uint64 installation = slots[i].installation;
    if (installation != 0 && static_cast<Oid>(installation >> 32) == database)
      reclaim_installation(&slots[i]);
  }
}

void register_reclaim_hooks() {
  previous_object_access_hook = object_access_hook;
  object_access_hook = on_object_access;
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

}  // namespace rate_limiter::pg
