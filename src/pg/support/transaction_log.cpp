// The transaction-effects log (transaction_log.hpp).
//
// One lane (array) per kind, each in recording order: a kind's work (a
// lookup, a commit, a packing) costs what that kind recorded, not what the
// whole transaction did.  A savepoint rollback visits every lane once.
#include "rate_limiter/pg/support/transaction_log.hpp"

#include <cstring>

namespace rate_limiter::pg {
namespace {

const EffectHandlers* handlers[kEffectKinds] = {};

struct Lane {
  Effect* entries = nullptr;  // in TopTransactionContext
  int count = 0;
  int capacity = 0;
};
Lane lanes[kEffectKinds];
uint32 next_seq = 0;

int kind_index(EffectKind k) { return static_cast<int>(k); }
Lane& lane_of(EffectKind k) { return lanes[kind_index(k)]; }

void forget() {
  for (Lane& l : lanes) l = Lane{};  // the memory goes with TopTransactionContext
  next_seq = 0;
}

// Every kind, in commit order: begin, its entries, end.
void run_phase(EffectPhase phase, void (*EffectHandlers::*member)(Effect&)) {
  for (int k = 0; k < kEffectKinds; ++k) {
    const EffectHandlers* h = handlers[k];
    if (h == nullptr) continue;
    if (h->begin) h->begin(phase);
    if (h->*member)
      for (int i = 0; i < lanes[k].count; ++i) (h->*member)(lanes[k].entries[i]);
    if (h->end) h->end(phase);
  }
}

void check_prepare() {
  for (int k = 0; k < kEffectKinds; ++k) {
    const EffectHandlers* h = handlers[k];
    if (h == nullptr || h->blocks_prepare == nullptr) continue;
    for (int i = 0; i < lanes[k].count; ++i)
      if (h->blocks_prepare(lanes[k].entries[i]))
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("%s", h->prepare_refusal)));
  }
}

void rollback_subtransaction(SubTransactionId aborted) {
  for (int k = 0; k < kEffectKinds; ++k)
    if (handlers[k] && handlers[k]->begin) handlers[k]->begin(EffectPhase::Rollback);
  for (int k = 0; k < kEffectKinds; ++k) {
    const EffectHandlers* h = handlers[k];
    Lane& l = lanes[k];
    int kept = 0;
    for (int i = 0; i < l.count; ++i) {
      Effect& e = l.entries[i];
      bool keep = true;
      if (e.subxact >= aborted)
        keep = h != nullptr && h->rolled_back != nullptr && h->rolled_back(e);
      else if (h != nullptr && h->outlived_rollback != nullptr)
        h->outlived_rollback(e, aborted);
      if (keep) {
        if (kept != i) l.entries[kept] = e;
        ++kept;
      }
    }
    l.count = kept;
  }
  for (int k = 0; k < kEffectKinds; ++k)
    if (handlers[k] && handlers[k]->end) handlers[k]->end(EffectPhase::Rollback);
}

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      check_prepare();
      break;
    case XACT_EVENT_COMMIT:
      run_phase(EffectPhase::Commit, &EffectHandlers::commit);
      forget();
      break;
    case XACT_EVENT_PREPARE:
      run_phase(EffectPhase::Prepare, &EffectHandlers::prepare);
      forget();
      break;
    case XACT_EVENT_ABORT:
      run_phase(EffectPhase::Abort, &EffectHandlers::abort);
      forget();
      break;
    default:
      break;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event == SUBXACT_EVENT_ABORT_SUB) rollback_subtransaction(subxact);
}

}  // namespace

void register_effect_kind(EffectKind kind, const EffectHandlers* h) {
  handlers[kind_index(kind)] = h;
}

void register_transaction_log() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

void reserve_effects(EffectKind kind, int n) {
  Lane& l = lane_of(kind);
  if (l.count + n <= l.capacity) return;
  const int fresh = Max(l.count + n, l.capacity == 0 ? 16 : l.capacity * 2);
  l.entries = static_cast<Effect*>(
      l.entries == nullptr ? MemoryContextAlloc(TopTransactionContext, fresh * sizeof(Effect))
                           : repalloc(l.entries, fresh * sizeof(Effect)));
  l.capacity = fresh;
}

Effect* record_effect(EffectKind kind) {
  reserve_effects(kind, 1);
  Lane& l = lane_of(kind);
  Effect* e = &l.entries[l.count++];
  memset(e, 0, sizeof *e);
  e->subxact = GetCurrentSubTransactionId();
  e->seq = next_seq++;
  return e;
}

int effect_count(EffectKind kind) noexcept { return lane_of(kind).count; }
Effect* effect_at(EffectKind kind, int i) noexcept { return &lane_of(kind).entries[i]; }

void discard_effects(EffectKind kind, bool (*drop)(Effect&)) noexcept {
  Lane& l = lane_of(kind);
  int kept = 0;
  for (int i = 0; i < l.count; ++i) {
    if (drop(l.entries[i])) continue;
    if (kept != i) l.entries[kept] = l.entries[i];
    ++kept;
  }
  l.count = kept;
}

uint32 effect_log_mark() noexcept { return next_seq; }

int effect_lower_bound(EffectKind kind, uint32 seq) noexcept {
  const Lane& l = lane_of(kind);
  int lo = 0, hi = l.count;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (l.entries[mid].seq < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

Effect* effect_by_seq(EffectKind kind, uint32 seq) noexcept {
  Lane& l = lane_of(kind);
  const int i = effect_lower_bound(kind, seq);
  return i < l.count && l.entries[i].seq == seq ? &l.entries[i] : nullptr;
}

}  // namespace rate_limiter::pg
