#include "rate_limiter/pg/support/boundary.hpp"

namespace rate_limiter::pg {

void raise_cpp_failure(CppFailure kind, const char* what) {
  switch (kind) {
    case CppFailure::OutOfMemory:
      ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory in rate_limiter")));
      break;
    case CppFailure::Exception:
      ereport(ERROR,
              (errcode(ERRCODE_INTERNAL_ERROR), errmsg("rate_limiter internal error: %s", what)));
      break;
    case CppFailure::Unknown:
    case CppFailure::None:
      break;
  }
  ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                  errmsg("rate_limiter internal error: unknown C++ exception")));
  pg_unreachable();
}

}  // namespace rate_limiter::pg
