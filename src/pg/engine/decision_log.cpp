#include "rate_limiter/pg/engine/decision_log.hpp"

#include "rate_limiter/pg/engine/result_names.hpp"

extern "C" {
#include "common/pg_prng.h"
#include "lib/stringinfo.h"
}

namespace rate_limiter::pg {
namespace {

// Ids quoted with the characters that would break the line escaped, and
// clipped like the error messages (64 characters), so that a hostile id
// cannot forge fields or flood the log.
void append_id(StringInfo buf, const char* field, const IdArg& id) {
  appendStringInfo(buf, " %s=", field);
  if (!id.present) {
    appendStringInfoString(buf, "none");
    return;
  }
  const int len = pg_mbcliplen(id.value.data(), static_cast<int>(id.value.size()), 64);
  appendStringInfoChar(buf, '"');
  for (int i = 0; i < len; ++i) {
    const unsigned char c = static_cast<unsigned char>(id.value[i]);
    if (c == '"' || c == '\\')
      appendStringInfo(buf, "\\%c", c);
    else if (c < 0x20 || c == 0x7f)
      appendStringInfo(buf, "\\x%02x", c);
    else
      appendStringInfoChar(buf, static_cast<char>(c));
  }
  if (static_cast<size_t>(len) < id.value.size()) appendStringInfoString(buf, "...");
  appendStringInfoChar(buf, '"');
}

}  // namespace

void log_decision(const char* function, const IdArg& user, const IdArg& endpoint,
                  const CallResult& result, core::CallKind kind, int64 requested) {
  const core::Decision& d = result.decision;
  const bool allowed = d.allowed();
  if (settings.log_decisions == kLogDecisionsOff) return;
  if (settings.log_decisions == kLogDecisionsDenied && allowed) return;
  // Sampled after the mode: the rate applies to the decisions it selects.
  if (settings.log_decisions_sample_rate < 1.0 &&
      !(pg_prng_double(&pg_global_prng_state) < settings.log_decisions_sample_rate))
    return;

  const DecidedLimit* b = result.binding();
  StringInfoData buf;
  initStringInfo(&buf);
  appendStringInfo(&buf, "rate_limiter decision: function=%s", function);
  append_id(&buf, "user", user);
  append_id(&buf, "endpoint", endpoint);
  appendStringInfo(&buf, " outcome=%s reason=%s", allowed ? "allowed" : "denied",
                   result.status == CallStatus::LockTimeout ? "fail_open_lock_timeout"
                                                            : reason_of(result, kind));
  if (b != nullptr)
    appendStringInfo(&buf, " scope=%s kind=%s limit=" INT64_FORMAT " remaining=" INT64_FORMAT,
                     scope_name(b->scope), limit_kind_name(*b), b->capacity(), d.binding_remaining);
  else
    appendStringInfoString(&buf, " scope=none kind=none limit=none remaining=none");
  appendStringInfo(&buf, " strategy=%s", strategy_name(d.strategy));
  if (requested >= 0)
    appendStringInfo(&buf, " requested=" INT64_FORMAT, requested);
  else
    appendStringInfoString(&buf, " requested=none");
  appendStringInfo(&buf, " granted=" INT64_FORMAT, d.granted);
  if (d.retry_after > 0)
    appendStringInfo(&buf, " retry_after=%.3fs",
                     static_cast<double>(d.retry_after) / USECS_PER_SEC);
  else
    appendStringInfoString(&buf, " retry_after=none");
  // The statement is not repeated: the line says everything (auto_explain
  // does the same).
  ereport(LOG, (errmsg_internal("%s", buf.data), errhidestmt(true)));
  pfree(buf.data);
}

}  // namespace rate_limiter::pg
