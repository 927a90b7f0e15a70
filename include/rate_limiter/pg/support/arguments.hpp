// Validation of SQL arguments.  Everything here may ereport, so it runs
// before any lock is taken and while no C++ object with a destructor is
// alive.  Error codes:
//   22004 null_value_not_allowed         a required argument is NULL
//   22023 invalid_parameter_value        empty id, unknown priority, bad count,
//                                        malformed context
//   22001 string_data_right_truncation   an id longer than 255 bytes
//   22003 numeric_value_out_of_range     a count above 10^15
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "rate_limiter/core/types.hpp"
#include "rate_limiter/pg/support/postgres.hpp"

namespace rate_limiter::pg {

// An identifier argument (user_id, api_endpoint, session_id).  present is
// false for a NULL optional argument.
struct IdArg {
  bool present = false;
  std::string_view value;
  text* datum = nullptr;  // the detoasted text, for writing it back to a table
};

IdArg required_id(FunctionCallInfo fcinfo, int argno, const char* name);
IdArg optional_id(FunctionCallInfo fcinfo, int argno, const char* name);

// tokens_requested: 1 .. 10^15.
int64 token_count(FunctionCallInfo fcinfo, int argno, const char* name);

core::Priority priority_arg(FunctionCallInfo fcinfo, int argno);

// Options passed in the jsonb `context` argument.
struct CallOptions {
  bool all_or_nothing = false;
  bool burst_mode = false;
  bool emergency_override = false;
  bool refund_on_abort = false;
};

// NULL and '{}' give the defaults; anything but an object of known keys
// with values of the right type is an error.
CallOptions context_arg(FunctionCallInfo fcinfo, int argno);

}  // namespace rate_limiter::pg
