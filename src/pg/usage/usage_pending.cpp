#include "rate_limiter/pg/usage/usage_pending.hpp"

#include "rate_limiter/pg/support.hpp"

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/usage/usage_log.hpp"
#include "rate_limiter/pg/usage/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kInitialCapacity = 16;

// The payload of an EffectKind::Usage entry; the entry's subtransaction is
// the one of the call that made the event.
struct Event {
  StreamRecord record;          // what commit appends (bytes in TopTransactionContext)
  SubTransactionId written_in;  // whose materialize_pending_usage() inserted its row;
                                // InvalidSubTransactionId: not written, pending
};

constexpr EffectKind kKind = EffectKind::Usage;

int pending_stream = -1;  // every event belongs to this stream

// The chunks reserved for the events (usage_queue_reserve_chunk()): always
// what next-fit packing of ALL kept events needs, written ones included (a
// rollback of the savepoint that wrote them makes them pending again).
int32* chunks = nullptr;
int chunk_count = 0;
int chunk_capacity = 0;

// Where commit gathers the events not written yet, in order; grown with
// the events, since the commit callback must not allocate.
StreamRecord* batch = nullptr;
int batch_capacity = 0;
int batch_count = 0;

// Next-fit packing of every kept event, kept up to date as events are
// added (so a call does not walk all the transaction's events) and
// recomputed after a savepoint rollback removed some.
NextFitPacking kept_packing;

void forget() {
  kept_packing = NextFitPacking{};
  chunks = nullptr;  // the memory goes with TopTransactionContext
  batch = nullptr;
  chunk_count = chunk_capacity = 0;
  batch_capacity = batch_count = 0;
  pending_stream = -1;
}

uint32 chunk_bytes() { return usage_queue_pool().chunk_bytes(); }

NextFitPacking packing_of_events() {
  NextFitPacking packing;
  for (int i = 0; i < effect_count(kKind); ++i)
    packing.add(effect_at(kKind, i)->as<Event>().record.length, chunk_bytes());
  return packing;
}

// Gives back the reserved chunks the kept events no longer need.
void release_surplus() noexcept {
  const int needed = static_cast<int>(kept_packing.chunks);
  if (chunk_count > needed) {
    usage_queue_pool().release_reserved(pending_stream, chunks + needed, chunk_count - needed);
    chunk_count = needed;
  }
}

void release_all() noexcept {
  if (chunk_count > 0) usage_queue_pool().release_reserved(pending_stream, chunks, chunk_count);
  chunk_count = 0;
}

template <typename T>
T* grown(T* array, int* capacity, int needed) {
  if (needed <= *capacity) return array;
  const int fresh = Max(needed, *capacity == 0 ? kInitialCapacity : *capacity * 2);
  T* result = static_cast<T*>(array == nullptr
                                  ? MemoryContextAlloc(TopTransactionContext, fresh * sizeof(T))
                                  : repalloc(array, fresh * sizeof(T)));
  *capacity = fresh;
  return result;
}

// The handlers of EffectKind::Usage (transaction_log.hpp).
//
// COMMIT and PREPARE: the charges stay, so the rows must exist: the events
// not written in the transaction are gathered in order and queued at the
// end.  Only the stream lock and memcpy into the reserved chunks (a
// subsequence of what they were reserved for needs no more of them):
// nothing here can fail.
void begin_phase(EffectPhase) { batch_count = 0; }

void gather(Effect& e) {
  const Event& ev = e.as<Event>();
  if (ev.written_in == InvalidSubTransactionId) batch[batch_count++] = ev.record;
}

void end_phase(EffectPhase phase) {
  switch (phase) {
    case EffectPhase::Commit:
    case EffectPhase::Prepare:
      if (batch_count > 0 || chunk_count > 0) {
        Latch* worker = usage_queue_pool().commit_reserved(pending_stream, chunks, chunk_count,
                                                           batch, batch_count);
        if (worker != nullptr && batch_count > 0) SetLatch(worker);
      }
      forget();
      break;
    case EffectPhase::Abort:
      release_all();
      forget();
      break;
    case EffectPhase::Rollback:
      kept_packing = packing_of_events();
      if (chunk_count > 0) release_surplus();
      break;
  }
}

// A call of the rolled-back subtree takes its event with it (its charge is
// refunded); an event of an older call whose row was written in the
// subtree is pending again (its charge stays).
bool rolled_back(Effect&) { return false; }

void outlived_rollback(Effect& e, SubTransactionId aborted) {
  Event& ev = e.as<Event>();
  if (ev.written_in >= aborted) ev.written_in = InvalidSubTransactionId;
}

constexpr EffectHandlers kHandlers = {
    nullptr, nullptr,  // PREPARE keeps the charges, and queues the rows
    gather,  gather,  nullptr, rolled_back, outlived_rollback, begin_phase, end_phase,
};

}  // namespace

void register_pending_usage_callbacks() { register_effect_kind(EffectKind::Usage, &kHandlers); }

bool defer_usage_event(int stream, const char* record, uint32 length, int wait_ms, bool* capped) {
  *capped = false;
  const int events = effect_count(kKind);
  // One stream per transaction (its database's installation); an event of
  // another one (the extension re-created in this transaction) is written
  // synchronously.
  if (events > 0 && stream != pending_stream) return false;
  // Everything that can fail comes first: memory, then the reservation.
  reserve_effects(kKind, 1);
  batch = grown(batch, &batch_capacity, events + 1);
  char* copy = static_cast<char*>(MemoryContextAlloc(TopTransactionContext, length));
  memcpy(copy, record, length);
  NextFitPacking packing = kept_packing;
  packing.add(length, chunk_bytes());
  if (static_cast<int>(packing.chunks) > chunk_count) {
    chunks = grown(chunks, &chunk_capacity, chunk_count + 1);
    if (chunk_count == 0) pending_stream = stream;
    const int32 chunk =
        usage_queue_reserve_chunk(stream, static_cast<uint32>(chunk_count), wait_ms, capped);
    if (chunk == kNoChunk) return false;
    chunks[chunk_count++] = chunk;
  }
  pending_stream = stream;
  Event& ev = record_effect(kKind)->as<Event>();  // cannot fail: reserved above
  ev.record = StreamRecord{copy, length};
  ev.written_in = InvalidSubTransactionId;
  kept_packing = packing;
  return true;
}

void materialize_pending_usage() {
  // One at a time, in order: an error aborts the (sub)transaction, whose
  // rollback makes the events it wrote pending again.  Found again by seq
  // after each insert: the insert may run triggers that record effects
  // (the log may be reallocated) or compact it (a revocation collapse), so
  // no index or pointer is kept across it.
  uint32 next = 0;
  for (;;) {
    Effect* e = nullptr;
    for (int i = effect_lower_bound(kKind, next); i < effect_count(kKind); ++i) {
      Effect* c = effect_at(kKind, i);
      if (c->as<Event>().written_in == InvalidSubTransactionId) {
        e = c;
        break;
      }
    }
    if (e == nullptr) break;
    const uint32 seq = e->seq;
    const Event ev = e->as<Event>();
    next = seq + 1;
    insert_usage_row(decode_usage_event(ev.record.bytes));
    if (Effect* again = effect_by_seq(kKind, seq))
      again->as<Event>().written_in = GetCurrentSubTransactionId();
  }
}

}  // namespace rate_limiter::pg
