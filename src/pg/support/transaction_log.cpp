// The transaction-effects log (transaction_log.hpp).
#include "rate_limiter/pg/support/transaction_log.hpp"

#include <cstring>

namespace rate_limiter::pg {
namespace {

const EffectHandlers* handlers[kEffectKinds] = {};

Effect* entries = nullptr;  // in TopTransactionContext
int count = 0;
int capacity = 0;
int per_kind[kEffectKinds] = {};
uint32 next_seq = 0;

void forget() {
  entries = nullptr;  // its memory goes with TopTransactionContext
  count = capacity = 0;
  for (int& n : per_kind) n = 0;
  next_seq = 0;
}

int kind_index(EffectKind k) { return static_cast<int>(k); }

// Every kind, in commit order: begin, its entries, end.
void run_phase(EffectPhase phase, void (*EffectHandlers::*member)(Effect&)) {
  for (int k = 0; k < kEffectKinds; ++k) {
    const EffectHandlers* h = handlers[k];
    if (h == nullptr) continue;
    if (h->begin) h->begin(phase);
    if (h->*member && per_kind[k] > 0)
      for (int i = 0; i < count; ++i)
        if (kind_index(entries[i].kind) == k) (h->*member)(entries[i]);
    if (h->end) h->end(phase);
  }
}

void check_prepare() {
  for (int i = 0; i < count; ++i) {
    const EffectHandlers* h = handlers[kind_index(entries[i].kind)];
    if (h != nullptr && h->blocks_prepare && h->blocks_prepare(entries[i]))
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("%s", h->prepare_refusal)));
  }
}

void rollback_subtransaction(SubTransactionId aborted) {
  for (int k = 0; k < kEffectKinds; ++k)
    if (handlers[k] && handlers[k]->begin) handlers[k]->begin(EffectPhase::Rollback);
  int kept = 0;
  for (int i = 0; i < count; ++i) {
    Effect& e = entries[i];
    const EffectHandlers* h = handlers[kind_index(e.kind)];
    bool keep = true;
    if (e.subxact >= aborted)
      keep = h != nullptr && h->rolled_back != nullptr && h->rolled_back(e);
    else if (h != nullptr && h->outlived_rollback != nullptr)
      h->outlived_rollback(e, aborted);
    if (keep) {
      if (kept != i) entries[kept] = e;
      ++kept;
    } else {
      --per_kind[kind_index(e.kind)];
    }
  }
  count = kept;
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

void reserve_effects(int n) {
  if (count + n <= capacity) return;
  const int fresh = Max(count + n, capacity == 0 ? 16 : capacity * 2);
  entries = static_cast<Effect*>(
      entries == nullptr ? MemoryContextAlloc(TopTransactionContext, fresh * sizeof(Effect))
                         : repalloc(entries, fresh * sizeof(Effect)));
  capacity = fresh;
}

Effect* record_effect(EffectKind kind) {
  reserve_effects(1);
  Effect* e = &entries[count++];
  memset(e, 0, sizeof *e);
  e->kind = kind;
  e->subxact = GetCurrentSubTransactionId();
  e->seq = next_seq++;
  ++per_kind[kind_index(kind)];
  return e;
}

int effect_count() noexcept { return count; }
int effect_count_of(EffectKind kind) noexcept { return per_kind[kind_index(kind)]; }
Effect* effect_at(int i) noexcept { return &entries[i]; }

void discard_effects(bool (*drop)(Effect&)) noexcept {
  int kept = 0;
  for (int i = 0; i < count; ++i) {
    if (drop(entries[i])) {
      --per_kind[kind_index(entries[i].kind)];
      continue;
    }
    if (kept != i) entries[kept] = entries[i];
    ++kept;
  }
  count = kept;
}

uint32 effect_log_mark() noexcept { return next_seq; }

int effect_lower_bound(uint32 seq) noexcept {
  int lo = 0, hi = count;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (entries[mid].seq < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

Effect* effect_by_seq(uint32 seq) noexcept {
  const int i = effect_lower_bound(seq);
  return i < count && entries[i].seq == seq ? &entries[i] : nullptr;
}

}  // namespace rate_limiter::pg
