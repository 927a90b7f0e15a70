// Helpers shared by the functions behind the rate_limiter_counters view
// (counters_view.cpp, admin_api.cpp).
#pragma once

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

// A counter key as 32 hex digits (hi, then lo), palloc'd.  The one text
// form both rate_limiter_counter_key() and rate_limiter_counter_slots()
// produce, so the view can join on it.
text* counter_key_text(const core::Hash128& key);

}  // namespace rate_limiter::pg
