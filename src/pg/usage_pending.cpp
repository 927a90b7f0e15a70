#include "rate_limiter/pg/usage_pending.hpp"

#include "rate_limiter/pg/stream_pool.hpp"
#include "rate_limiter/pg/usage_log.hpp"
#include "rate_limiter/pg/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

constexpr int kInitialCapacity = 16;

// This transaction's pending events [pending_head, pending_count): parallel
// arrays in TopTransactionContext (records[i] is what commit appends,
// subxacts[i] the subtransaction that made it).  Events before
// pending_head were written by materialize_pending_usage().
StreamRecord* records = nullptr;
SubTransactionId* subxacts = nullptr;
int pending_head = 0;
int pending_count = 0;
int records_capacity = 0;
int subxacts_capacity = 0;
int pending_stream = -1;  // every pending event belongs to this stream

// The chunks reserved for them (usage_queue_reserve_chunk()), always at
// least what next-fit packing of the pending events needs.
int32* chunks = nullptr;
int chunk_count = 0;
int chunk_capacity = 0;

void forget() {
  records = nullptr;  // the memory goes with TopTransactionContext
  subxacts = nullptr;
  chunks = nullptr;
  pending_head = pending_count = records_capacity = subxacts_capacity = 0;
  chunk_count = chunk_capacity = 0;
  pending_stream = -1;
}

uint32 chunk_bytes() { return usage_queue_pool().chunk_bytes(); }

NextFitPacking packing_of_pending() {
  NextFitPacking packing;
  for (int i = pending_head; i < pending_count; ++i) packing.add(records[i].length, chunk_bytes());
  return packing;
}

// Gives back the reserved chunks the pending events no longer need.
void release_surplus() noexcept {
  const int needed = static_cast<int>(packing_of_pending().chunks);
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

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PREPARE:
      // The charges stay, so the rows must exist.  Only the stream lock
      // and memcpy into the reserved chunks: nothing here can fail.
      if (pending_count > pending_head || chunk_count > 0) {
        Latch* worker = usage_queue_pool().commit_reserved(pending_stream, chunks, chunk_count, records + pending_head,
                                                           pending_count - pending_head);
        if (worker != nullptr) SetLatch(worker);
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
  if (event != SUBXACT_EVENT_ABORT_SUB || pending_count == pending_head) return;
  // As in transaction_effects.cpp: every entry recorded since `subxact`
  // began belongs to the aborted subtree.
  int kept = pending_head;
  for (int i = pending_head; i < pending_count; ++i) {
    if (subxacts[i] < subxact) {
      records[kept] = records[i];
      subxacts[kept] = subxacts[i];
      ++kept;
    }
  }
  pending_count = kept;
  release_surplus();
}

}  // namespace

void register_pending_usage_callbacks() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

bool defer_usage_event(int stream, const char* record, uint32 length, int wait_ms) {
  // One stream per transaction (its database's installation); an event of
  // another one (the extension re-created in this transaction) is written
  // synchronously.
  if (pending_count > pending_head && stream != pending_stream) return false;
  // Everything that can fail comes first: memory, then the reservation.
  records = grown(records, &records_capacity, pending_count + 1);
  subxacts = grown(subxacts, &subxacts_capacity, pending_count + 1);
  char* copy = static_cast<char*>(MemoryContextAlloc(TopTransactionContext, length));
  memcpy(copy, record, length);
  NextFitPacking packing = packing_of_pending();
  packing.add(length, chunk_bytes());
  if (static_cast<int>(packing.chunks) > chunk_count) {
    chunks = grown(chunks, &chunk_capacity, chunk_count + 1);
    pending_stream = stream;
    const int32 chunk = usage_queue_reserve_chunk(stream, wait_ms);
    if (chunk == kNoChunk) return false;
    chunks[chunk_count++] = chunk;
  }
  pending_stream = stream;
  records[pending_count] = StreamRecord{copy, length};
  subxacts[pending_count] = GetCurrentSubTransactionId();
  ++pending_count;
  return true;
}

void materialize_pending_usage() {
  // One at a time, in order: an error aborts the (sub)transaction, and the
  // abort callbacks release what is still reserved.
  while (pending_head < pending_count) {
    insert_usage_row(decode_usage_event(records[pending_head].bytes));
    ++pending_head;
  }
  release_surplus();
}

}  // namespace rate_limiter::pg
