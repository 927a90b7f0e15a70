// The public header of src/pg/revocations/: revoked sessions: the shared cache, lookups,
// transactional changes.
//
// Other subsystems include this header only, never the files it lists
// (scripts/check_layers.py).
#pragma once

#include "rate_limiter/pg/revocations/revocation_cache.hpp"
#include "rate_limiter/pg/revocations/revocation_changes.hpp"
#include "rate_limiter/pg/revocations/revocation_lookup.hpp"
