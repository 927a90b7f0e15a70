#include "rate_limiter/pg/rules/rule_changes.hpp"

#include "rate_limiter/pg/rules/rule_loader.hpp"
#include "rate_limiter/pg/rules/rule_table.hpp"
#include "rate_limiter/pg/rules/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

enum class Op : uint8 { Upsert, Delete };

struct RuleChange {
  core::Hash128 key;
  core::RuleRecord record;  // Upsert
  int64 previous;           // the key's change before this one (-1: none); set while indexed
  SubTransactionId subxact;
  Op op;
};

// The pending changes, in chunks (a bulk change of a million rows grows by
// chunks, never by copying), in a context under TopTransactionContext.
constexpr int kChunkChanges = 8192;
// Changes applied per hold of the installations lock at commit: a bulk
// commit lets registrations and loads in between.
constexpr int kApplyBatch = 1024;

struct Chunk {
  RuleChange* changes;  // kChunkChanges of them
};

struct Pending {
  MemoryContext context = nullptr;
  Chunk* chunks = nullptr;
  int nchunks = 0;
  int chunk_capacity = 0;
  int64 count = 0;
  uint64 installation = 0;  // the installation the changes belong to
  InstallationSlot* slot = nullptr;
  bool reload = false;  // a statement-level change: reset at commit
  SubTransactionId reload_subxact = InvalidSubTransactionId;
  HTAB* index = nullptr;  // key -> latest change; built on first lookup
};

Pending pending;

struct IndexEntry {
  core::Hash128 key;
  int64 position;
};

RuleChange& change_at(int64 i) {
  return pending.chunks[i / kChunkChanges].changes[i % kChunkChanges];
}

void forget_pending() { pending = Pending{}; }  // the memory goes with TopTransactionContext

void ensure_context() {
  if (pending.context != nullptr) return;
  pending.context = AllocSetContextCreate(TopTransactionContext, "rate_limiter rule changes",
                                          ALLOCSET_DEFAULT_SIZES);
}

void index_change(int64 position) {
  bool found = false;
  RuleChange& c = change_at(position);
  auto* e = static_cast<IndexEntry*>(hash_search(pending.index, &c.key, HASH_ENTER, &found));
  c.previous = found ? e->position : -1;
  e->position = position;
}

// The changes from `keep` on are gone (a rolled-back subtransaction): each
// key the index points at one of them points back at its change before,
// newest first, so the index stays right in time proportional to what the
// rollback removed.
void unindex_from(int64 keep) {
  for (int64 i = pending.count - 1; i >= keep; --i) {
    const RuleChange& c = change_at(i);
    bool found = false;
    auto* e = static_cast<IndexEntry*>(hash_search(pending.index, &c.key, HASH_FIND, &found));
    if (!found || e->position != i) continue;
    if (c.previous >= 0)
      e->position = c.previous;
    else
      hash_search(pending.index, &c.key, HASH_REMOVE, &found);
  }
}

void build_index() {
  HASHCTL ctl;
  memset(&ctl, 0, sizeof ctl);
  ctl.keysize = sizeof(core::Hash128);
  ctl.entrysize = sizeof(IndexEntry);
  ctl.hcxt = pending.context;
  pending.index = hash_create("rate_limiter own rule changes", Max(pending.count, 64), &ctl,
                              HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
  for (int64 i = 0; i < pending.count; ++i) index_change(i);
}

void record_change(const ExtensionCatalog* ext, const core::Hash128& key, Op op,
                   const core::RuleRecord* record) {
  ensure_context();
  if (pending.count == 0 && !pending.reload) {
    pending.installation = ext->installation;
    pending.slot = ext->slot;
  }
  if (pending.count == static_cast<int64>(pending.nchunks) * kChunkChanges) {
    if (pending.nchunks == pending.chunk_capacity) {
      const int capacity = pending.chunk_capacity == 0 ? 16 : pending.chunk_capacity * 2;
      pending.chunks = static_cast<Chunk*>(
          pending.chunks == nullptr ? MemoryContextAlloc(pending.context, capacity * sizeof(Chunk))
                                    : repalloc(pending.chunks, capacity * sizeof(Chunk)));
      pending.chunk_capacity = capacity;
    }
    pending.chunks[pending.nchunks++].changes = static_cast<RuleChange*>(
        MemoryContextAlloc(pending.context, kChunkChanges * sizeof(RuleChange)));
  }
  RuleChange& c = change_at(pending.count);
  c.key = key;
  c.op = op;
  c.previous = -1;
  c.subxact = GetCurrentSubTransactionId();
  c.record = record != nullptr ? *record : core::RuleRecord{};
  if (pending.index != nullptr) index_change(pending.count);
  ++pending.count;
}

// Commit: every change in order, in batches under the installations lock
// (shared), so that the state a batch reads cannot move during it: a load
// cannot finish (its tombstones would be left behind) nor a reset start (it
// would sweep before these writes).  NotLoaded and Resetting skip: the next
// load reads these rows from the tables.
void apply_changes() noexcept {
  InstallationSlot* slot = pending.slot;
  for (int64 start = 0; start < pending.count; start += kApplyBatch) {
    const int64 end = Min(start + kApplyBatch, pending.count);
    LWLockAcquire(installations_lock(), LW_SHARED);
    const bool ours = slot->installation == pending.installation && !slot->dropping;
    const RulesState state = slot->rules_state;
    if (ours && (state == RulesState::Loading || state == RulesState::Loaded)) {
      const bool tombstones = state == RulesState::Loading;
      for (int64 i = start; i < end; ++i) {
        const RuleChange& c = change_at(i);
        if (c.op == Op::Upsert) {
          const core::RuleWrite w = rule_table_upsert(c.key, c.record);
          note_rule_write(slot, w, c.record);
          // During a load, a change that found no room leaves the loader's
          // older version to be inserted once room appears: load again.
          if (w == core::RuleWrite::Full && tombstones)
            pg_atomic_write_u32(&slot->rules_load_invalid, 1);
        } else {
          bool no_room = false;
          if (rule_table_erase(c.key, tombstones, &no_room)) note_rule_removed(slot);
          // The loader might bring the row back: it must start over.
          if (no_room) pg_atomic_write_u32(&slot->rules_load_invalid, 1);
        }
      }
      pg_atomic_fetch_add_u64(&slot->rule_changes, 1);
    }
    LWLockRelease(installations_lock());
  }
}

void on_xact_event(XactEvent event, void*) {
  // The context is made with the first change; everything goes with it.
  if (pending.context == nullptr) return;
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      if (pending.count == 0 && !pending.reload) break;
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("cannot PREPARE a transaction that changed rate limits")));
      break;
    case XACT_EVENT_COMMIT:
      if (pending.slot != nullptr && pending.slot->installation == pending.installation) {
        if (pending.reload)
          reset_installation_rules(pending.slot);  // the load reads every change
        else
          apply_changes();
      }
      forget_pending();
      break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PREPARE:
      forget_pending();
      break;
    default:
      break;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event != SUBXACT_EVENT_ABORT_SUB) return;
  if (pending.reload && pending.reload_subxact >= subxact) {
    pending.reload = false;
    pending.reload_subxact = InvalidSubTransactionId;
  }
  if (pending.count == 0) return;
  // Subtransaction ids grow: every change since the first one of `subxact`
  // belongs to the aborted subtree.  Find where they start.
  int64 keep = pending.count;
  while (keep > 0 && change_at(keep - 1).subxact >= subxact) --keep;
  if (keep == pending.count) return;
  if (pending.index != nullptr) unindex_from(keep);
  pending.count = keep;
}

core::LimitKind kind_of_relation(const ExtensionCatalog* ext, Oid relid) {
  if (relid == ext->token_limits) return core::LimitKind::Tokens;
  if (relid == ext->request_limits) return core::LimitKind::Requests;
  ereport(ERROR,
          (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
           errmsg("rate_limiter_rules_changed() fired on a table that holds no rate limits")));
  pg_unreachable();
}

core::ScopeKind scope_kind_of(bool has_user, bool has_endpoint) {
  if (has_user) return has_endpoint ? core::ScopeKind::UserEndpoint : core::ScopeKind::User;
  return has_endpoint ? core::ScopeKind::Endpoint : core::ScopeKind::Default;
}

std::string_view view_of(text* t) {
  return t == nullptr ? std::string_view() : std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

core::Hash128 key_of_row(const ExtensionCatalog* ext, const RuleColumns& columns, HeapTuple tuple,
                         core::LimitKind kind) {
  text* user = nullptr;
  text* endpoint = nullptr;
  columns.ids(tuple, &user, &endpoint);
  const core::Hash128 scope = scope_of(ext, scope_kind_of(user != nullptr, endpoint != nullptr),
                                       view_of(user), view_of(endpoint));
  return core::counter_key(scope, kind);
}

// Column maps of the two tables, bound to the descriptor the trigger got.
RuleColumns trigger_columns[core::kLimitKinds];

}  // namespace

void register_rule_change_callbacks() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

bool has_own_rule_changes() noexcept { return pending.count > 0 || pending.reload; }

bool own_rules_reload_pending() noexcept { return pending.reload; }

OwnChange own_rule_change(const core::Hash128& key, core::RuleRecord* out) {
  if (pending.reload) return OwnChange::Unknown;
  if (pending.count == 0) return OwnChange::None;
  if (pending.index == nullptr) build_index();
  bool found = false;
  const auto* e =
      static_cast<const IndexEntry*>(hash_search(pending.index, &key, HASH_FIND, &found));
  if (!found) return OwnChange::None;
  const RuleChange& c = change_at(e->position);
  if (c.op == Op::Delete) return OwnChange::Delete;
  *out = c.record;
  return OwnChange::Upsert;
}

void record_rule_upsert(const ExtensionCatalog* ext, const core::Hash128& key,
                        const core::RuleRecord& record) {
  record_change(ext, key, Op::Upsert, &record);
}

void record_rule_delete(const ExtensionCatalog* ext, const core::Hash128& key) {
  record_change(ext, key, Op::Delete, nullptr);
}

void note_rules_reload() {
  const ExtensionCatalog* ext = extension_catalog();
  ensure_context();
  if (!pending.reload) pending.reload_subxact = GetCurrentSubTransactionId();
  pending.reload = true;
  pending.installation = ext->installation;
  pending.slot = ext->slot;
}

}  // namespace rate_limiter::pg

using namespace rate_limiter;
using namespace rate_limiter::pg;

// AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW on token_limits and
// request_limits: records the row's change for the commit.  Fired FOR EACH
// STATEMENT (TRUNCATE): the installation's rules reload after the commit.
RL_SQL_FUNCTION(rate_limiter_rules_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("rate_limiter_rules_changed() must be called as a trigger")));
  require_shared_state();
  auto* td = reinterpret_cast<TriggerData*>(fcinfo->context);
  if (!TRIGGER_FIRED_FOR_ROW(td->tg_event)) {
    note_rules_reload();
    return PointerGetDatum(nullptr);
  }
  const ExtensionCatalog* ext = extension_catalog();
  const core::LimitKind kind = kind_of_relation(ext, RelationGetRelid(td->tg_relation));
  RuleColumns& columns = trigger_columns[static_cast<int>(kind)];
  TupleDesc desc = RelationGetDescr(td->tg_relation);
  if (!columns.bound_to(desc)) columns.bind(desc, kind);
  HeapTuple old_row = nullptr;
  HeapTuple new_row = nullptr;
  if (TRIGGER_FIRED_BY_INSERT(td->tg_event)) {
    new_row = td->tg_trigtuple;
  } else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
    old_row = td->tg_trigtuple;
    new_row = td->tg_newtuple;
  } else if (TRIGGER_FIRED_BY_DELETE(td->tg_event)) {
    old_row = td->tg_trigtuple;
  }
  if (new_row != nullptr) {
    const core::Hash128 key = key_of_row(ext, columns, new_row, kind);
    if (old_row != nullptr) {
      const core::Hash128 old_key = key_of_row(ext, columns, old_row, kind);
      if (old_key != key) record_change(ext, old_key, Op::Delete, nullptr);
    }
    const core::RuleRecord record = columns.record(new_row);
    record_change(ext, key, Op::Upsert, &record);
  } else if (old_row != nullptr) {
    record_change(ext, key_of_row(ext, columns, old_row, kind), Op::Delete, nullptr);
  }
  return PointerGetDatum(nullptr);
}

// reload_rate_limits(): every rule of this database is read again from the
// tables after this transaction commits (for changes made with the triggers
// disabled).
RL_SQL_FUNCTION(reload_rate_limits) {
  require_shared_state();
  note_rules_reload();
  PG_RETURN_VOID();
}
