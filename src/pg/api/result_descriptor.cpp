// The result descriptors of this backend's record-returning functions
// (result_descriptor.hpp).
#include "rate_limiter/pg/api/result_descriptor.hpp"

namespace rate_limiter::pg {
namespace {

// The result descriptors of this backend's functions, by function OID.
// The executor makes a new FmgrInfo for every execution of a statement
// (each EXECUTE of a prepared one, each pgbench -M prepared call), so
// fn_extra alone keeps nothing between calls, and get_call_result_type()
// rebuilds the 14-column descriptor from pg_proc every time: about 16k
// instructions of a call's 83k (callgrind on a single-user backend, one
// EXECUTE per call).  A function's OUT columns cannot change without a new
// OID; still, after any change to pg_proc (a syscache callback) an entry
// is checked once against a fresh descriptor before it is used again, so
// an OID that came back as another function is never trusted.  Entries
// live in TopMemoryContext and are never freed: an execution may still
// point at one through fn_extra.  One is replaced only when its OID turns
// out to be another function, or when more than kCachedDescriptors
// functions of ours return records here.
struct CachedDescriptor {
  Oid function = InvalidOid;
  TupleDesc desc = nullptr;
  bool verified = false;
};
constexpr int kCachedDescriptors = 8;
CachedDescriptor cached_descriptors[kCachedDescriptors];
int next_descriptor = 0;
bool descriptor_callback_registered = false;
// Bumped by every pg_proc invalidation, so that one arriving while a
// descriptor is being built (catalog reads accept invalidations) is not
// lost: the entry then stays unverified.
uint64 descriptor_generation = 0;

void unverify_descriptors(Datum, int, uint32) {
  ++descriptor_generation;
  for (CachedDescriptor& c : cached_descriptors) c.verified = false;
}

TupleDesc build_result_descriptor(FunctionCallInfo fcinfo, MemoryContext where) {
  TupleDesc desc;
  if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("function returning record called in a context that cannot accept it")));
  MemoryContext old = MemoryContextSwitchTo(where);
  desc = BlessTupleDesc(CreateTupleDescCopy(desc));
  MemoryContextSwitchTo(old);
  return desc;
}

TupleDesc kept_copy(TupleDesc desc) {
  MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
  TupleDesc copy = BlessTupleDesc(CreateTupleDescCopy(desc));
  MemoryContextSwitchTo(old);
  return copy;
}

}  // namespace

TupleDesc result_descriptor(FunctionCallInfo fcinfo) {
  if (fcinfo->flinfo->fn_extra != nullptr) return static_cast<TupleDesc>(fcinfo->flinfo->fn_extra);
  const Oid function = fcinfo->flinfo->fn_oid;
  if (!OidIsValid(function)) {
    TupleDesc desc = build_result_descriptor(fcinfo, fcinfo->flinfo->fn_mcxt);
    fcinfo->flinfo->fn_extra = desc;
    return desc;
  }
  if (!descriptor_callback_registered) {
    CacheRegisterSyscacheCallback(PROCOID, unverify_descriptors, (Datum)0);
    descriptor_callback_registered = true;
  }
  CachedDescriptor* entry = nullptr;
  for (CachedDescriptor& c : cached_descriptors)
    if (c.function == function) {
      entry = &c;
      break;
    }
  if (entry == nullptr || !entry->verified) {
    const uint64 generation = descriptor_generation;
    TupleDesc fresh = build_result_descriptor(fcinfo, fcinfo->flinfo->fn_mcxt);
    if (entry == nullptr) {
      entry = &cached_descriptors[next_descriptor];
      next_descriptor = (next_descriptor + 1) % kCachedDescriptors;
      entry->function = function;
      entry->desc = kept_copy(fresh);  // the one it replaces leaks: more than 8 functions
    } else if (!equalTupleDescs(fresh, entry->desc)) {
      entry->desc = kept_copy(fresh);  // the OID is another function now (the old copy leaks)
    }
    entry->verified = generation == descriptor_generation;
  }
  fcinfo->flinfo->fn_extra = entry->desc;
  return entry->desc;
}

}  // namespace rate_limiter::pg
