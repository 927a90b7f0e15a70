// The boundary between C++ and PostgreSQL error handling.
//
// Two mechanisms must never cross:
//  - a C++ exception must not unwind through PostgreSQL frames;
//  - an ereport(ERROR) (a longjmp) must not skip a live C++ destructor.
//
// Every SQL-callable function is defined with RL_SQL_FUNCTION.  Its body runs
// inside guarded_call(): any C++ exception that escapes the body is caught
// there, all destructors have run by the time the catch block is left, and
// only then is the error re-raised as ereport(ERROR).  The body itself keeps
// C++ objects with destructors out of any frame that can ereport: it uses
// plain structs, and code that builds C++ containers (the rule cache) calls
// no PostgreSQL function that can fail.
#pragma once

#include <exception>
#include <new>

#include "rate_limiter/pg/support/postgres.hpp"

namespace rate_limiter::pg {

enum class CppFailure { None, OutOfMemory, Exception, Unknown };

// Raises the ERROR that corresponds to a caught C++ exception.  Never returns.
[[noreturn]] void raise_cpp_failure(CppFailure kind, const char* what);

template <typename Body>
Datum guarded_call(FunctionCallInfo fcinfo, Body body) {
  CppFailure failure = CppFailure::None;
  char what[256];
  what[0] = '\0';
  Datum result = (Datum)0;
  try {
    result = body(fcinfo);
  } catch (const std::bad_alloc&) {
    failure = CppFailure::OutOfMemory;
  } catch (const std::exception& e) {
    failure = CppFailure::Exception;
    strlcpy(what, e.what(), sizeof what);
  } catch (...) {
    failure = CppFailure::Unknown;
  }
  // Outside the catch blocks: the exception object and every C++ object of
  // the body are gone; a longjmp from here skips nothing.
  if (failure != CppFailure::None) raise_cpp_failure(failure, what);
  return result;
}

}  // namespace rate_limiter::pg

#define RL_SQL_FUNCTION(name)                                     \
  RL_FUNCTION_INFO(name)                                          \
  static Datum name##_body(FunctionCallInfo fcinfo);              \
  extern "C" Datum name(PG_FUNCTION_ARGS) {                       \
    return ::rate_limiter::pg::guarded_call(fcinfo, name##_body); \
  }                                                               \
  static Datum name##_body([[maybe_unused]] FunctionCallInfo fcinfo)
