#include "rate_limiter/pg/api/rate_limit_trigger.hpp"

#include <cerrno>
#include <cstdlib>

#include "rate_limiter/core/priority.hpp"
#include "rate_limiter/pg/rules.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {
namespace {

#define ERRCODE_RATE_LIMIT_EXCEEDED MAKE_SQLSTATE('R', 'L', '4', '2', '9')

constexpr int64 kMaxCost = 1000000000000000;  // 10^15, as tokens_requested

// The functions the trigger calls.  Plain data in a memory context that
// lives as long as the backend: a stale set is replaced, never freed, in
// case a call through it is still running further up the stack (it only
// happens when the extension's functions are re-created).
struct Callees {
  bool valid;
  Oid enforce_oid;
  Oid allocate_oid;
  uint32 enforce_hash;  // PROCOID syscache hash values, to filter invalidations
  uint32 allocate_hash;
  FmgrInfo* enforce;     // enforce_rate_limit(text, text, text)
  FmgrInfo* allocate;    // allocate_tokens(text, bigint, text, text, text, jsonb)
  Datum all_or_nothing;  // '{"all_or_nothing": true}'::jsonb
};

Callees callees;

void procoid_callback(Datum, int, uint32 hashvalue) {
  // Only a flag: invalidation callbacks must not fail.
  if (hashvalue == 0 || hashvalue == callees.enforce_hash || hashvalue == callees.allocate_hash)
    callees.valid = false;
}

Oid function_in_schema(const ExtensionCatalog* ext, const char* name, int nargs, const Oid* types) {
  List* qualified = list_make2(makeString(pstrdup(ext->schema_name)), makeString(pstrdup(name)));
  return LookupFuncName(qualified, nargs, types, false);
}

const Callees& current_callees(const ExtensionCatalog* ext) {
  if (callees.valid) return callees;
  const Oid enforce_types[3] = {TEXTOID, TEXTOID, TEXTOID};
  const Oid allocate_types[6] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};
  const Oid enforce_oid = function_in_schema(ext, "enforce_rate_limit", 3, enforce_types);
  const Oid allocate_oid = function_in_schema(ext, "allocate_tokens", 6, allocate_types);
  if (callees.enforce == nullptr || enforce_oid != callees.enforce_oid ||
      allocate_oid != callees.allocate_oid) {
    MemoryContext cxt =
        AllocSetContextCreate(TopMemoryContext, "rate_limit_trigger", ALLOCSET_SMALL_SIZES);
    auto* enforce = static_cast<FmgrInfo*>(MemoryContextAllocZero(cxt, sizeof(FmgrInfo)));
    auto* allocate = static_cast<FmgrInfo*>(MemoryContextAllocZero(cxt, sizeof(FmgrInfo)));
    fmgr_info_cxt(enforce_oid, enforce, cxt);
    fmgr_info_cxt(allocate_oid, allocate, cxt);
    MemoryContext old = MemoryContextSwitchTo(cxt);
    const Datum context =
        DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"all_or_nothing\": true}"));
    MemoryContextSwitchTo(old);
    callees.enforce = enforce;
    callees.allocate = allocate;
    callees.all_or_nothing = context;
    callees.enforce_oid = enforce_oid;
    callees.allocate_oid = allocate_oid;
  }
  callees.enforce_hash = GetSysCacheHashValue1(PROCOID, ObjectIdGetDatum(enforce_oid));
  callees.allocate_hash = GetSysCacheHashValue1(PROCOID, ObjectIdGetDatum(allocate_oid));
  callees.valid = true;
  return callees;
}

// TG_ARGV, parsed.  Plain data: everything here may ereport.
struct TriggerArgs {
  const char* user_column;
  int user_attno;
  bool has_endpoint;
  const char* endpoint;
  bool has_cost;
  int cost_attno;  // 0: constant cost
  const char* cost_column;
  int64 cost;
  const char* priority;
};

int column_of(Relation rel, const char* name, const char* role) {
  const int attno = SPI_fnumber(RelationGetDescr(rel), name);
  if (attno <= 0)  // missing, or a system column
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                    errmsg("column \"%s\" of relation \"%s\" does not exist", name,
                           RelationGetRelationName(rel)),
                    errdetail("rate_limit_trigger() takes the %s from this column.", role)));
  return attno;
}

// An integer literal: optional sign, digits, nothing else.
bool parse_integer(const char* s, int64* out) {
  if (*s == '\0') return false;
  errno = 0;
  char* end = nullptr;
  const long long v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

bool looks_numeric(const char* s) {
  return (*s >= '0' && *s <= '9') || *s == '-' || *s == '+' || *s == '.';
}

void check_cost(int64 cost, const char* what) {
  if (cost < 1)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s must be at least 1, not " INT64_FORMAT, what, cost)));
  if (cost > kMaxCost)
    ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                    errmsg("%s is too large: " INT64_FORMAT, what, cost),
                    errdetail("The maximum is " INT64_FORMAT ".", kMaxCost)));
}

TriggerArgs parse_args(const TriggerData* trig) {
  const Trigger* t = trig->tg_trigger;
  Relation rel = trig->tg_relation;
  if (t->tgnargs < 2 || t->tgnargs > 4)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg_plural("trigger \"%s\" passes %d argument to rate_limit_trigger(), "
                                  "which takes 2 to 4",
                                  "trigger \"%s\" passes %d arguments to rate_limit_trigger(), "
                                  "which takes 2 to 4",
                                  t->tgnargs, t->tgname, t->tgnargs),
                    errhint("EXECUTE FUNCTION rate_limit_trigger('user_column', 'endpoint' "
                            "[, cost [, priority]]), where endpoint '' means none and cost is an "
                            "integer or a column name.")));
  TriggerArgs a{};
  a.user_column = t->tgargs[0];
  if (a.user_column[0] == '\0')
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
             errmsg("the user column name passed to rate_limit_trigger() must not be empty")));
  a.user_attno = column_of(rel, a.user_column, "user id");
  a.endpoint = t->tgargs[1];
  a.has_endpoint = a.endpoint[0] != '\0';
  a.priority = t->tgnargs >= 4 ? t->tgargs[3] : "high";
  if (t->tgnargs >= 3) {
    const char* cost = t->tgargs[2];
    a.has_cost = true;
    if (parse_integer(cost, &a.cost)) {
      check_cost(a.cost, "the cost passed to rate_limit_trigger()");
    } else if (cost[0] == '\0' || looks_numeric(cost)) {
      ereport(ERROR,
              (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
               errmsg("invalid cost \"%s\" for rate_limit_trigger()", cost),
               errhint("Pass an integer from 1 to 10^15, or the name of an integer column.")));
    } else {
      a.cost_column = cost;
      a.cost_attno = column_of(rel, cost, "token cost");
      const Oid type = TupleDescAttr(RelationGetDescr(rel), a.cost_attno - 1)->atttypid;
      if (type != INT2OID && type != INT4OID && type != INT8OID)
        ereport(ERROR,
                (errcode(ERRCODE_DATATYPE_MISMATCH),
                 errmsg("cost column \"%s\" must be of type smallint, integer or bigint, not %s",
                        cost, format_type_be(type))));
    }
  }
  return a;
}

int64 row_cost(const TriggerArgs& a, HeapTuple row, TupleDesc desc) {
  if (a.cost_attno == 0) return a.cost;
  bool isnull = false;
  const Datum d = heap_getattr(row, a.cost_attno, desc, &isnull);
  if (isnull)
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                    errmsg("cost column \"%s\" is NULL", a.cost_column)));
  int64 cost = 0;
  switch (TupleDescAttr(desc, a.cost_attno - 1)->atttypid) {
    case INT2OID:
      cost = DatumGetInt16(d);
      break;
    case INT4OID:
      cost = DatumGetInt32(d);
      break;
    default:
      cost = DatumGetInt64(d);
      break;
  }
  char what[NAMEDATALEN + 32];
  snprintf(what, sizeof what, "cost column \"%s\"", a.cost_column);
  check_cost(cost, what);
  return cost;
}

// The table owner attached the trigger: the call needs their EXECUTE
// privilege (see rate_limit_trigger.hpp).
void require_owner_may_execute(Relation rel, Oid function, const char* name) {
  const Oid owner = rel->rd_rel->relowner;
  if (pg_proc_aclcheck(function, owner, ACL_EXECUTE) != ACLCHECK_OK)
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied for function %s", name),
                    errdetail("rate_limit_trigger() calls it with the privileges of role \"%s\", "
                              "the owner of table \"%s\".",
                              GetUserNameFromId(owner, false), RelationGetRelationName(rel))));
}

// What the trigger reports from an allocate_tokens record.  Plain data.
struct Allocation {
  bool success;
  bool has_limit, has_remaining, has_retry;
  int64 limit;
  int64 tokens_remaining;
  int64 retry_after_micros;
  const char* reason;
  const char* limit_kind;
  const char* scope;
};

// Reads the columns by name: the record may gain columns in later versions.
Allocation read_allocation(Datum record) {
  HeapTupleHeader header = DatumGetHeapTupleHeader(record);
  TupleDesc desc =
      lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(header), HeapTupleHeaderGetTypMod(header));
  HeapTupleData tuple;
  tuple.t_len = HeapTupleHeaderGetDatumLength(header);
  ItemPointerSetInvalid(&tuple.t_self);
  tuple.t_tableOid = InvalidOid;
  tuple.t_data = header;
  Allocation a{};
  bool found_success = false;
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    if (att->attisdropped) continue;
    const char* name = NameStr(att->attname);
    bool isnull = false;
    const Datum v = heap_getattr(&tuple, i + 1, desc, &isnull);
    if (strcmp(name, "success") == 0) {
      found_success = !isnull;
      a.success = !isnull && DatumGetBool(v);
    } else if (strcmp(name, "limit") == 0) {
      a.has_limit = !isnull;
      if (!isnull) a.limit = DatumGetInt64(v);
    } else if (strcmp(name, "tokens_remaining") == 0) {
      a.has_remaining = !isnull;
      if (!isnull) a.tokens_remaining = DatumGetInt64(v);
    } else if (strcmp(name, "retry_after") == 0) {
      a.has_retry = !isnull;
      if (!isnull) a.retry_after_micros = interval_to_micros(DatumGetIntervalP(v));
    } else if (strcmp(name, "reason") == 0) {
      a.reason = isnull ? nullptr : TextDatumGetCString(v);
    } else if (strcmp(name, "limit_kind") == 0) {
      a.limit_kind = isnull ? nullptr : TextDatumGetCString(v);
    } else if (strcmp(name, "scope") == 0) {
      a.scope = isnull ? nullptr : TextDatumGetCString(v);
    }
  }
  ReleaseTupleDesc(desc);
  if (!found_success) elog(ERROR, "rate_limiter: allocate_tokens returned no \"success\" column");
  return a;
}

// The trigger's priority argument as the settings spell it ("high"); it
// was accepted by allocate_tokens, so it parses.
const char* priority_word(const char* priority) {
  const std::optional<core::Priority> p = core::parse_priority(priority);
  return p.has_value() ? core::priority_name(*p) : priority;
}

[[noreturn]] void raise_not_granted(const Allocation& a, const char* user, const TriggerArgs& args,
                                    int64 cost) {
  // No wait helps (retry_after is NULL): say so rather than "retry after".
  const bool never = a.reason != nullptr && strcmp(a.reason, "exceeds_capacity") == 0;
  StringInfoData detail;
  initStringInfo(&detail);
  appendStringInfo(&detail, "Requested " INT64_FORMAT " tokens, all or nothing: %s.", cost,
                   a.reason != nullptr ? a.reason : "denied");
  if (a.has_limit)
    appendStringInfo(&detail, " Limit: " INT64_FORMAT " %s (%s scope).", a.limit,
                     a.limit_kind != nullptr ? a.limit_kind : "tokens",
                     a.scope != nullptr ? a.scope : "unknown");
  if (a.has_remaining)
    appendStringInfo(&detail, " Tokens remaining: " INT64_FORMAT ".", a.tokens_remaining);
  ereport(ERROR,
          (errcode(ERRCODE_RATE_LIMIT_EXCEEDED),
           args.has_endpoint ? errmsg("rate limit exceeded for user \"%s\" on endpoint \"%s\"",
                                      user, args.endpoint)
                             : errmsg("rate limit exceeded for user \"%s\"", user),
           errdetail_internal("%s", detail.data),
           a.has_retry ? errhint("Retry after %.3f seconds.",
                                 static_cast<double>(a.retry_after_micros) / USECS_PER_SEC)
           : never     ? errhint("Retrying cannot succeed: the limit never grants " INT64_FORMAT
                                 " tokens at once at %s priority. Lower the cost, raise the limit, or "
                                     "raise rate_limiter.priority_share_%s.",
                                 cost, priority_word(args.priority), priority_word(args.priority))
                       : 0));
  pg_unreachable();
}

}  // namespace

void register_rate_limit_trigger_invalidation() {
  CacheRegisterSyscacheCallback(PROCOID, procoid_callback, (Datum)0);
}

}  // namespace rate_limiter::pg

using namespace rate_limiter::pg;

// rate_limit_trigger(): see rate_limit_trigger.hpp for the TG_ARGV convention.
RL_SQL_FUNCTION(rate_limit_trigger) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("rate_limit_trigger() must be called as a trigger")));
  require_shared_state();
  auto* trig = reinterpret_cast<TriggerData*>(fcinfo->context);
  const TriggerEvent event = trig->tg_event;
  if (!TRIGGER_FIRED_BEFORE(event) || !TRIGGER_FIRED_FOR_ROW(event) ||
      !(TRIGGER_FIRED_BY_INSERT(event) || TRIGGER_FIRED_BY_UPDATE(event)))
    ereport(ERROR,
            (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
             errmsg("rate_limit_trigger() must be fired BEFORE INSERT or UPDATE FOR EACH ROW"),
             errdetail("Trigger \"%s\" on table \"%s\" is not.", trig->tg_trigger->tgname,
                       RelationGetRelationName(trig->tg_relation))));
  Relation rel = trig->tg_relation;
  TupleDesc desc = RelationGetDescr(rel);
  HeapTuple row = TRIGGER_FIRED_BY_UPDATE(event) ? trig->tg_newtuple : trig->tg_trigtuple;
  const TriggerArgs args = parse_args(trig);

  char* user = SPI_getvalue(row, desc, args.user_attno);  // any type, as text
  if (user == nullptr)
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                    errmsg("user id column \"%s\" is NULL", args.user_column),
                    errdetail("rate_limit_trigger() needs a user id in every row.")));
  const Callees& c = current_callees(extension_catalog());

  if (!args.has_cost) {
    // One request, as enforce_rate_limit(user, endpoint); it raises RL429.
    require_owner_may_execute(rel, c.enforce_oid, "enforce_rate_limit");
    LOCAL_FCINFO(call, 3);
    InitFunctionCallInfoData(*call, c.enforce, 3, InvalidOid, nullptr, nullptr);
    call->args[0] = NullableDatum{CStringGetTextDatum(user), false};
    call->args[1] = NullableDatum{args.has_endpoint ? CStringGetTextDatum(args.endpoint) : (Datum)0,
                                  !args.has_endpoint};
    call->args[2] = NullableDatum{(Datum)0, true};  // session_id
    FunctionCallInvoke(call);
    return PointerGetDatum(row);
  }

  const int64 cost = row_cost(args, row, desc);
  require_owner_may_execute(rel, c.allocate_oid, "allocate_tokens");
  LOCAL_FCINFO(call, 6);
  InitFunctionCallInfoData(*call, c.allocate, 6, InvalidOid, nullptr, nullptr);
  call->args[0] = NullableDatum{CStringGetTextDatum(user), false};
  call->args[1] = NullableDatum{Int64GetDatum(cost), false};
  call->args[2] = NullableDatum{CStringGetTextDatum(args.priority), false};
  call->args[3] = NullableDatum{args.has_endpoint ? CStringGetTextDatum(args.endpoint) : (Datum)0,
                                !args.has_endpoint};
  call->args[4] = NullableDatum{(Datum)0, true};  // session_id
  call->args[5] = NullableDatum{c.all_or_nothing, false};
  const Datum result = FunctionCallInvoke(call);
  if (call->isnull) elog(ERROR, "rate_limiter: allocate_tokens returned NULL");
  const Allocation a = read_allocation(result);
  if (!a.success) raise_not_granted(a, user, args, cost);
  return PointerGetDatum(row);
}
