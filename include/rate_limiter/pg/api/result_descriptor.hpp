// The result descriptor of a record-returning SQL function of ours, kept
// per call site (fn_extra) and per backend by function OID.
//
// The executor makes a new FmgrInfo for every execution of a statement, so
// fn_extra alone keeps nothing between calls, and get_call_result_type()
// would rebuild the descriptor from pg_proc every time (about a fifth of a
// hot-path call).  The per-backend cache is checked again against a fresh
// descriptor after any change to pg_proc.  May ereport (a function called
// where a record cannot be accepted).
#pragma once

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

TupleDesc result_descriptor(FunctionCallInfo fcinfo);

}  // namespace rate_limiter::pg
