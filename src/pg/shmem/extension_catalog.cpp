#include "rate_limiter/pg/shmem/extension_catalog.hpp"

#include "rate_limiter/core/scope_key.hpp"
#include "rate_limiter/pg/shmem/shared_state.hpp"
#include "rate_limiter/pg/workers.hpp"

namespace rate_limiter::pg {
namespace {

ExtensionCatalog cached;
bool cached_valid = false;

constexpr int kMaxResetCallbacks = 8;
CatalogResetCallback reset_callbacks[kMaxResetCallbacks];
int reset_callback_count = 0;

void forget_catalog() {
  cached_valid = false;
  for (int i = 0; i < reset_callback_count; ++i) reset_callbacks[i]();
}

void relcache_callback(Datum, Oid relid) {
  // Only plain flags are touched here: invalidation callbacks must not do
  // catalog access or anything that can fail.
  if (!cached_valid) return;
  if (relid == InvalidOid || relid == cached.token_limits || relid == cached.request_limits ||
      relid == cached.token_usage)
    forget_catalog();
}

Oid table_in_schema(const char* name, Oid schema) {
  Oid relid = get_relname_relid(name, schema);
  if (!OidIsValid(relid))
    ereport(ERROR,
            (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("rate_limiter table \"%s\" is missing", name),
             errhint("Reinstall the extension: DROP EXTENSION rate_limiter; "
                     "CREATE EXTENSION rate_limiter;")));
  return relid;
}

// What the extension's pg_extension row says.
struct ExtensionRow {
  bool found = false;
  Oid schema = InvalidOid;
  Oid owner = InvalidOid;
  char* version = nullptr;  // extversion, palloc'd
  // Written by this transaction (CREATE or ALTER EXTENSION ... UPDATE not
  // yet committed): it may still roll back, and nothing would tell this
  // backend that the version is the old one again.
  bool uncommitted = false;
};

ExtensionRow read_extension_row(Oid ext_oid) {
  ExtensionRow row;
  Relation rel = table_open(ExtensionRelationId, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
              ObjectIdGetDatum(ext_oid));
  SysScanDesc scan = systable_beginscan(rel, ExtensionOidIndexId, true, nullptr, 1, &key);
  HeapTuple tuple = systable_getnext(scan);
  if (HeapTupleIsValid(tuple)) {
    auto* form = reinterpret_cast<Form_pg_extension>(GETSTRUCT(tuple));
    row.found = true;
    row.schema = form->extnamespace;
    row.owner = form->extowner;
    bool isnull = false;
    Datum d = heap_getattr(tuple, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
    row.version = isnull ? pstrdup("") : text_to_cstring(DatumGetTextPP(d));
    row.uncommitted = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tuple->t_data));
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return row;
}

// True while rate_limiter's own CREATE or ALTER EXTENSION script runs: its
// functions are called between versions then (another extension's script
// gets no such pass).
bool own_script_running(Oid ext_oid) {
  return creating_extension && CurrentExtensionObject == ext_oid;
}

}  // namespace

bool extension_is_current() {
  Oid ext_oid = get_extension_oid("rate_limiter", true);
  if (!OidIsValid(ext_oid)) return false;
  if (own_script_running(ext_oid)) return true;
  const ExtensionRow row = read_extension_row(ext_oid);
  return row.found && strcmp(row.version, RATE_LIMITER_SCHEMA_VERSION) == 0;
}

const ExtensionCatalog* extension_catalog() {
  // The slot may have been reclaimed and reused without an invalidation
  // reaching this backend (a rolled-back CREATE EXTENSION that took the
  // slot of this installation's database): look everything up again.
  if (cached_valid && (cached.slot->installation != cached.installation || cached.slot->dropping))
    forget_catalog();
  if (cached_valid) return &cached;

  Oid ext_oid = get_extension_oid("rate_limiter", true);
  if (!OidIsValid(ext_oid))
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("extension \"rate_limiter\" is not installed in this database"),
                    errhint("Run CREATE EXTENSION rate_limiter;")));

  ExtensionCatalog fresh;
  fresh.extension = ext_oid;
  fresh.installation = (static_cast<uint64>(MyDatabaseId) << 32) | ext_oid;
  const ExtensionRow row = read_extension_row(ext_oid);
  if (!row.found)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("extension \"rate_limiter\" is not installed in this database")));
  fresh.schema = row.schema;
  fresh.owner = row.owner;
  const char* version = row.version;
  const bool row_uncommitted = row.uncommitted;  // what it says is not kept (ExtensionRow)
  // The functions of an older schema pass other arguments than the library
  // reads, and its tables lack columns: stop here, clearly.  CREATE and
  // ALTER EXTENSION run scripts that call the library between versions.
  if (!own_script_running(ext_oid) && strcmp(version, RATE_LIMITER_SCHEMA_VERSION) != 0)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("extension \"rate_limiter\" in this database is at version %s, "
                           "but the library is version %s",
                           version, RATE_LIMITER_SCHEMA_VERSION),
                    errhint("Run ALTER EXTENSION rate_limiter UPDATE;")));

  char* name = get_namespace_name(fresh.schema);
  if (name == nullptr)
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_SCHEMA),
                    errmsg("schema of extension \"rate_limiter\" does not exist")));
  strlcpy(fresh.schema_name, name, sizeof fresh.schema_name);
  fresh.quoted_schema = MemoryContextStrdup(TopMemoryContext, quote_identifier(fresh.schema_name));
  fresh.token_limits = table_in_schema("token_limits", fresh.schema);
  fresh.request_limits = table_in_schema("request_limits", fresh.schema);
  fresh.token_usage = table_in_schema("token_usage", fresh.schema);
  fresh.rate_limit_parents = get_relname_relid("rate_limit_parents", fresh.schema);
  fresh.concurrency_limits = get_relname_relid("concurrency_limits", fresh.schema);
  fresh.slot = register_installation(fresh.installation);
  fresh.tag = fresh.slot->tag;
  fresh.default_scope =
      installation_scope(fresh.installation, fresh.tag, core::ScopeKind::Default, {}, {});

  if (cached.quoted_schema != nullptr) pfree(const_cast<char*>(cached.quoted_schema));
  cached = fresh;
  // Not kept while a script runs (the schema may be between versions), nor
  // while the row that says the version is uncommitted.
  cached_valid = !own_script_running(ext_oid) && !row_uncommitted;
  return &cached;
}

namespace {

// The last user scope this backend hashed.  A keyed SipHash of a scope
// costs about 770 instructions, a fair share of a call; applications call
// for the same user again and again (one user per request, retries, a
// session's calls), so the previous answer is kept.  Exact: the cache
// compares the whole input (installation, tag and every byte of the id).
struct LastScope {
  uint64 installation = 0;
  uint16 tag = 0;
  bool valid = false;
  uint32 length = 0;
  char bytes[core::kMaxIdBytes];
  core::Hash128 hash;
};
LastScope last_user;

}  // namespace

core::Hash128 scope_of(const ExtensionCatalog* ext, core::ScopeKind scope, std::string_view user,
                       std::string_view endpoint) {
  // The default rule's scope has no ids: hashed once per catalog load.
  if (scope == core::ScopeKind::Default) return ext->default_scope;
  // Derived from the user's scope (core::scope_hash), which the cache
  // below usually has.
  if (scope == core::ScopeKind::UserEndpoint)
    return user_endpoint_scope_of(ext, scope_of(ext, core::ScopeKind::User, user, {}), endpoint);
  if (scope == core::ScopeKind::User && user.size() <= sizeof last_user.bytes) {
    LastScope& c = last_user;
    if (c.valid && c.installation == ext->installation && c.tag == ext->tag &&
        c.length == user.size() && memcmp(c.bytes, user.data(), user.size()) == 0)
      return c.hash;
    c.hash = installation_scope(ext->installation, ext->tag, scope, user, endpoint);
    c.installation = ext->installation;
    c.tag = ext->tag;
    c.length = static_cast<uint32>(user.size());
    memcpy(c.bytes, user.data(), user.size());
    c.valid = true;
    return c.hash;
  }
  return installation_scope(ext->installation, ext->tag, scope, user, endpoint);
}

core::Hash128 user_endpoint_scope_of(const ExtensionCatalog* ext, const core::Hash128& user_scope,
                                     std::string_view endpoint) {
  return core::with_tag(
      core::user_endpoint_scope(shared->hash_key, ext->installation, user_scope, endpoint),
      ext->tag);
}

void on_extension_catalog_reset(CatalogResetCallback callback) {
  if (reset_callback_count < kMaxResetCallbacks) reset_callbacks[reset_callback_count++] = callback;
}

void register_extension_catalog_invalidation() {
  CacheRegisterRelcacheCallback(relcache_callback, (Datum)0);
}

AsExtensionOwner::AsExtensionOwner(const ExtensionCatalog* ext) {
  GetUserIdAndSecContext(&saved_user_, &saved_context_);
  SetUserIdAndSecContext(
      ext->owner, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
  // As a SECURITY DEFINER function with SET search_path would: a GUC nest
  // level that transaction abort unwinds on error, restore() otherwise.
  guc_nest_level_ = NewGUCNestLevel();
  (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                          GUC_ACTION_SAVE, true, 0, false);
}

void AsExtensionOwner::restore() {
  AtEOXact_GUC(true, guc_nest_level_);
  SetUserIdAndSecContext(saved_user_, saved_context_);
}

}  // namespace rate_limiter::pg
