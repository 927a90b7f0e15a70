#include "rate_limiter/pg/engine/emergency_access.hpp"

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kMarkerFunction = "rate_limiter_emergency_access";

Oid marker_oid = InvalidOid;  // cached; forgotten with the extension catalog

void forget_marker() { marker_oid = InvalidOid; }

Oid marker_function() {
  if (!OidIsValid(marker_oid)) {
    const ExtensionCatalog* ext = extension_catalog();
    List* name =
        list_make2(makeString(pstrdup(ext->schema_name)), makeString(pstrdup(kMarkerFunction)));
    marker_oid = LookupFuncName(name, 0, nullptr, false);
  }
  return marker_oid;
}

}  // namespace

void require_emergency_privilege() {
  const Oid fn = marker_function();
  if (pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) == ACLCHECK_OK) return;
  metric_add(&shared->metrics.emergency_refused);
  ereport(
      ERROR,
      (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
       errmsg("permission denied to use emergency_override"),
       errdetail("Role \"%s\" lacks EXECUTE on %s.%s().", GetUserNameFromId(GetUserId(), false),
                 extension_catalog()->schema_name, kMarkerFunction),
       errhint("GRANT EXECUTE ON FUNCTION %s() TO the roles that may use it.", kMarkerFunction)));
}

void register_emergency_access_reset() { on_extension_catalog_reset(forget_marker); }

}  // namespace rate_limiter::pg

using namespace rate_limiter::pg;

// rate_limiter_emergency_access() -> boolean: true when the current user may
// use emergency override (whoever can call it can).
RL_SQL_FUNCTION(rate_limiter_emergency_access) {
  require_shared_state();
  PG_RETURN_BOOL(pg_proc_aclcheck(marker_function(), GetUserId(), ACL_EXECUTE) == ACLCHECK_OK);
}
