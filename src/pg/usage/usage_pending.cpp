#include "rate_limiter/pg/usage/usage_pending.hpp"

#include "rate_limiter/pg/shmem/stream_pool.hpp"
#include "rate_limiter/pg/usage/usage_log.hpp"
#include "rate_limiter/pg/usage/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kInitialCapacity = 16;

// This transaction's events [0, event_count): parallel arrays in
// TopTransactionContext.  records[i] is what commit appends, made_in[i] the
// subtransaction of the call that made it, written_in[i] the one whose
// materialize_pending_usage() inserted its row (InvalidSubTransactionId:
// not written, pending).
StreamRecord* records = nullptr;
SubTransactionId* made_in = nullptr;
SubTransactionId* written_in = nullptr;
int event_count = 0;
int records_capacity = 0;
int made_in_capacity = 0;
int written_in_capacity = 0;
int pending_stream = -1;  // every event belongs to this stream

// The chunks reserved for them (usage_queue_reserve_chunk()): always what
// next-fit packing of ALL kept events needs, written ones included (a
// rollback of the savepoint that wrote them makes them pending again).
int32* chunks = nullptr;
int chunk_count = 0;
int chunk_capacity = 0;

void forget() {
  records = nullptr;  // the memory goes with TopTransactionContext
  made_in = nullptr;
  written_in = nullptr;
  chunks = nullptr;
  event_count = records_capacity = made_in_capacity = written_in_capacity = 0;
  chunk_count = chunk_capacity = 0;
  pending_stream = -1;
}

uint32 chunk_bytes() { return usage_queue_pool().chunk_bytes(); }

NextFitPacking packing_of_events() {
  NextFitPacking packing;
  for (int i = 0; i < event_count; ++i) packing.add(records[i].length, chunk_bytes());
  return packing;
}

// Gives back the reserved chunks the kept events no longer need.
void release_surplus() noexcept {
  const int needed = static_cast<int>(packing_of_events().chunks);
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
  T* result = static_cast<T*>(array == nullptr ? MemoryContextAlloc(TopTransactionContext, fresh * sizeof(T))
                                                : repalloc(array, fresh * sizeof(T)));
  *capacity = fresh;
  return result;
}

// Moves the events not written yet to the front of `records` (their order
// kept) and returns how many there are.  In place: the commit callback
// must not allocate.
int compact_unwritten() noexcept {
  int n = 0;
  for (int i = 0; i < event_count; ++i)
    if (written_in[i] == InvalidSubTransactionId) records[n++] = records[i];
  return n;
}

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PREPARE:
      // The charges stay, so the rows must exist: the ones not written in
      // the transaction are queued now.  Only the stream lock and memcpy
      // into the reserved chunks (a subsequence of what they were reserved
      // for needs no more of them): nothing here can fail.
      if (event_count > 0 || chunk_count > 0) {
        const int n = compact_unwritten();
        Latch* worker = usage_queue_pool().commit_reserved(pending_stream, chunks, chunk_count, records, n);
        if (worker != nullptr && n > 0) SetLatch(worker);
      }
      forget();
      break;
    case XACT_EVENT_ABORT:
      release_all();
      forget();
      break;
    default:
      break;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event != SUBXACT_EVENT_ABORT_SUB || event_count == 0) return;
  // As in transaction_effects.cpp: subtransaction ids grow, and every
  // subtransaction begun since `subxact` belongs to the aborted subtree, so
  // an id >= subxact is in it.  A call of the subtree takes its event with
  // it (its charge is refunded); an event of an older call whose row was
  // written in the subtree is pending again (its charge stays).
  int kept = 0;
  for (int i = 0; i < event_count; ++i) {
    if (made_in[i] >= subxact) continue;
    records[kept] = records[i];
    made_in[kept] = made_in[i];
    written_in[kept] = written_in[i] >= subxact ? InvalidSubTransactionId : written_in[i];
    ++kept;
  }
  event_count = kept;
  release_surplus();
}

}  // namespace

void register_pending_usage_callbacks() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

bool defer_usage_event(int stream, const char* record, uint32 length, int wait_ms, bool* capped) {
  *capped = false;
  // One stream per transaction (its database's installation); an event of
  // another one (the extension re-created in this transaction) is written
  // synchronously.
  if (event_count > 0 && stream != pending_stream) return false;
  // Everything that can fail comes first: memory, then the reservation.
  records = grown(records, &records_capacity, event_count + 1);
  made_in = grown(made_in, &made_in_capacity, event_count + 1);
  written_in = grown(written_in, &written_in_capacity, event_count + 1);
  char* copy = static_cast<char*>(MemoryContextAlloc(TopTransactionContext, length));
  memcpy(copy, record, length);
  NextFitPacking packing = packing_of_events();
  packing.add(length, chunk_bytes());
  if (static_cast<int>(packing.chunks) > chunk_count) {
    chunks = grown(chunks, &chunk_capacity, chunk_count + 1);
    if (chunk_count == 0) pending_stream = stream;
    const int32 chunk = usage_queue_reserve_chunk(stream, static_cast<uint32>(chunk_count), wait_ms, capped);
    if (chunk == kNoChunk) return false;
    chunks[chunk_count++] = chunk;
  }
  pending_stream = stream;
  records[event_count] = StreamRecord{copy, length};
  made_in[event_count] = GetCurrentSubTransactionId();
  written_in[event_count] = InvalidSubTransactionId;
  ++event_count;
  return true;
}

void materialize_pending_usage() {
  // One at a time, in order: an error aborts the (sub)transaction, whose
  // abort callback makes the events it wrote pending again.
  for (int i = 0; i < event_count; ++i) {
    if (written_in[i] != InvalidSubTransactionId) continue;
    insert_usage_row(decode_usage_event(records[i].bytes));
    written_in[i] = GetCurrentSubTransactionId();
  }
}

}  // namespace rate_limiter::pg
