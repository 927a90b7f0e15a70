// Who may use {"emergency_override": true}.
//
// The privilege is EXECUTE on the extension's function
// rate_limiter_emergency_access(), revoked from PUBLIC at install:
//   GRANT EXECUTE ON FUNCTION rate_limiter_emergency_access() TO oncall;
// A grant is an ordinary catalog entry, so it is dumped, revoked and
// inherited through role membership the way DBAs expect, and no role has to
// be created by the extension.
#pragma once

namespace rate_limiter::pg {

// Raises 42501 (and counts the attempt) unless the current user holds the
// privilege.  Call before any lock: it may read the catalogs.
void require_emergency_privilege();

void register_emergency_access_reset();  // once, from _PG_init

}  // namespace rate_limiter::pg
