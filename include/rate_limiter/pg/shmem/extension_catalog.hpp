// Where the extension lives in the current database: its schema, its owner
// and its tables.  Looked up from the catalogs on first use and cached per
// backend; a relcache invalidation of any of the extension's tables (DROP
// EXTENSION, TRUNCATE, ALTER ...) forgets it, together with everything
// derived from it (saved plans, the rule cache).
#pragma once

#include <string_view>

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

struct InstallationSlot;

struct ExtensionCatalog {
  Oid extension;
  uint64 installation;  // MyDatabaseId << 32 | extension: hashed into every scope
  Oid schema;
  char schema_name[NAMEDATALEN];
  const char* quoted_schema;  // quote_identifier(schema_name), for building SQL
  Oid owner;                  // internal SQL runs as this role
  Oid token_limits;
  Oid request_limits;
  Oid token_usage;
  Oid rate_limit_parents;  // InvalidOid while a script creates it
  Oid concurrency_limits;  // InvalidOid while a script creates it
  // The installation's slot in the registry (installations.hpp) and its
  // tag, registered on first use.
  InstallationSlot* slot;
  uint16 tag;
  core::Hash128 default_scope;  // scope_of(Default): it depends on the installation only
};

// installation_scope() for this installation.
core::Hash128 scope_of(const ExtensionCatalog* ext, core::ScopeKind scope, std::string_view user,
                       std::string_view endpoint);
// The UserEndpoint scope of the user whose User scope (scope_of) is
// `user_scope`: scope_of(UserEndpoint, user, endpoint) without the id.
core::Hash128 user_endpoint_scope_of(const ExtensionCatalog* ext, const core::Hash128& user_scope,
                                     std::string_view endpoint);

// The schema version this library is built for (rate_limiter.control's
// default_version; the Makefile passes it).  The C code assumes that schema:
// an installation at another version must be updated first.
#ifndef RATE_LIMITER_SCHEMA_VERSION
#error "RATE_LIMITER_SCHEMA_VERSION must be defined (the Makefile passes default_version)"
#endif

// Never returns nullptr: raises 55000 when the extension is not installed in
// this database or is at another version than the library (with the hint
// to run ALTER EXTENSION rate_limiter UPDATE), and 53400 when the registry
// has no room for it.  Inside CREATE or ALTER EXTENSION the version is not
// checked: the scripts call the library while the schema is between
// versions.
const ExtensionCatalog* extension_catalog();

// True when the extension is installed in this database at the library's
// version (or a CREATE or ALTER EXTENSION is running): what the background
// workers check before touching a database.
bool extension_is_current();

// Callbacks run when the catalog entry is forgotten (to drop derived state).
using CatalogResetCallback = void (*)();
void on_extension_catalog_reset(CatalogResetCallback callback);

// Registers the relcache callback; called once from _PG_init.
void register_extension_catalog_invalidation();

// Runs `body` with the current user switched to the extension owner, in a
// restricted security context (as PostgreSQL does for maintenance commands).
// search_path is pinned to pg_catalog, pg_temp for the same span: the
// internal SQL runs with the owner's rights, so an operator, function or
// type the caller put earlier on its search_path (say evil.= for text)
// must never be resolved there; it would run as the owner.  Kept plans are
// replanned when search_path differs, so the pin also keeps them safe.
// Error cleanup at (sub)transaction abort restores the previous user and
// search_path.
class AsExtensionOwner {
 public:
  explicit AsExtensionOwner(const ExtensionCatalog* ext);
  void restore();

 private:
  Oid saved_user_;
  int saved_context_;
  int guc_nest_level_;
};

}  // namespace rate_limiter::pg
