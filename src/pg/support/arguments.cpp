#include "rate_limiter/pg/support/arguments.hpp"

#include "rate_limiter/core/priority.hpp"

#include <algorithm>

namespace rate_limiter::pg {
namespace {

// Error messages quote at most 64 bytes of a user string, cut on a character
// boundary so that the message stays valid in the database encoding.
int clipped_length(const char* s, std::size_t len) {
  const int n = static_cast<int>(std::min<std::size_t>(len, 256));
  return pg_mbcliplen(s, n, 64);
}

IdArg id_value(FunctionCallInfo fcinfo, int argno, const char* name) {
  IdArg arg;
  arg.present = true;
  arg.datum = PG_GETARG_TEXT_PP(argno);
  arg.value = std::string_view(VARDATA_ANY(arg.datum), VARSIZE_ANY_EXHDR(arg.datum));
  if (arg.value.empty())
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s must not be empty", name)));
  if (arg.value.size() > core::kMaxIdBytes)
    ereport(ERROR, (errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
                    errmsg("%s is too long (%zu bytes)", name, arg.value.size()),
                    errdetail("The maximum length is %zu bytes.", core::kMaxIdBytes)));
  return arg;
}

struct ContextKey {
  const char* name;
  bool CallOptions::*field;
};

const ContextKey kContextKeys[] = {
    {"all_or_nothing", &CallOptions::all_or_nothing},
    {"burst_mode", &CallOptions::burst_mode},
    {"emergency_override", &CallOptions::emergency_override},
    {"refund_on_abort", &CallOptions::refund_on_abort},
};

const char kKnownKeysHint[] =
    "Known keys: all_or_nothing, burst_mode, emergency_override, refund_on_abort.";

}  // namespace

IdArg required_id(FunctionCallInfo fcinfo, int argno, const char* name) {
  if (PG_ARGISNULL(argno))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s must not be NULL", name)));
  return id_value(fcinfo, argno, name);
}

IdArg optional_id(FunctionCallInfo fcinfo, int argno, const char* name) {
  if (PG_NARGS() <= argno || PG_ARGISNULL(argno)) return IdArg{};
  return id_value(fcinfo, argno, name);
}

int64 token_count(FunctionCallInfo fcinfo, int argno, const char* name) {
  if (PG_ARGISNULL(argno))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s must not be NULL", name)));
  const int64 n = PG_GETARG_INT64(argno);
  if (n < 1)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s must be at least 1, not " INT64_FORMAT, name, n)));
  if (n > core::kMaxQuantity)
    ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                    errmsg("%s is too large: " INT64_FORMAT, name, n),
                    errdetail("The maximum is " INT64_FORMAT ".", core::kMaxQuantity)));
  return n;
}

core::Priority priority_arg(FunctionCallInfo fcinfo, int argno) {
  if (PG_ARGISNULL(argno))
    ereport(ERROR,
            (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("priority_level must not be NULL")));
  text* t = PG_GETARG_TEXT_PP(argno);
  std::string_view v(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
  std::optional<core::Priority> p = core::parse_priority(v);
  if (!p)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown priority_level \"%.*s\"", clipped_length(v.data(), v.size()),
                           v.data()),
                    errhint("Use 'high', 'medium' or 'low'.")));
  return *p;
}

CallOptions context_arg(FunctionCallInfo fcinfo, int argno) {
  CallOptions ctx;
  if (PG_NARGS() <= argno || PG_ARGISNULL(argno)) return ctx;
  Jsonb* jb = PG_GETARG_JSONB_P(argno);
  if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("context must be a JSON object"),
             errhint("For example: '{\"all_or_nothing\": true}'.")));
  if (JB_ROOT_COUNT(jb) == 0) return ctx;  // the common case: '{}'

  JsonbIterator* it = JsonbIteratorInit(&jb->root);
  JsonbValue v;
  JsonbIteratorToken token;
  char key[64];
  while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE) {
    if (token == WJB_KEY) {
      const int len = v.val.string.len;
      if (len >= static_cast<int>(sizeof key)) {
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("unknown key in context: \"%.*s...\"",
                               clipped_length(v.val.string.val, len), v.val.string.val),
                        errhint("%s", kKnownKeysHint)));
      } else {  // (ereport(ERROR) does not return; the else shows the bound to analyzers)
        memcpy(key, v.val.string.val, len);
        key[len] = '\0';
      }
      continue;
    }
    if (token != WJB_VALUE) continue;
    bool* target = nullptr;
    for (const ContextKey& k : kContextKeys)
      if (strcmp(key, k.name) == 0) target = &(ctx.*(k.field));
    if (target == nullptr)
      ereport(ERROR,
              (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
               errmsg("unknown key in context: \"%s\"", key), errhint("%s", kKnownKeysHint)));
    if (v.type != jbvBool)
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                      errmsg("context key \"%s\" must be a boolean", key)));
    *target = v.val.boolean;
  }
  return ctx;
}

}  // namespace rate_limiter::pg
