#include "rate_limiter/pg/usage_pending.hpp"

#include "rate_limiter/pg/usage_log.hpp"
#include "rate_limiter/pg/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

struct PendingEvent {
  char* record;  // in TopTransactionContext
  uint32 length;
  SubTransactionId subxact;
};

constexpr int kInitialCapacity = 16;

PendingEvent* pending = nullptr;  // in TopTransactionContext
int pending_count = 0;
int pending_capacity = 0;
// Bytes reserved in the queue for this transaction.  Counted before the
// event is copied, so a failed allocation cannot leak a reservation.
uint64 reserved = 0;

void forget() {
  pending = nullptr;  // its memory goes with TopTransactionContext
  pending_count = 0;
  pending_capacity = 0;
  reserved = 0;
}

// Commit or prepare: the charges stay, so the rows must exist.  Only the
// queue lock and memcpy: nothing here can fail.
void enqueue_all() {
  for (int i = 0; i < pending_count; ++i) {
    usage_queue_append_reserved(pending[i].record, pending[i].length);
    reserved -= pending[i].length;
  }
  usage_queue_release(reserved);
  forget();
}

void on_xact_event(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PREPARE:
      enqueue_all();
      break;
    case XACT_EVENT_ABORT:
      usage_queue_release(reserved);
      forget();
      break;
    default:
      break;
  }
}

void on_subxact_event(SubXactEvent event, SubTransactionId subxact, SubTransactionId, void*) {
  if (event != SUBXACT_EVENT_ABORT_SUB || pending_count == 0) return;
  // As in transaction_effects.cpp: every entry recorded since `subxact`
  // began belongs to the aborted subtree.
  int kept = 0;
  uint64 dropped = 0;
  for (int i = 0; i < pending_count; ++i) {
    if (pending[i].subxact < subxact)
      pending[kept++] = pending[i];
    else
      dropped += pending[i].length;
  }
  pending_count = kept;
  reserved -= dropped;
  usage_queue_release(dropped);
}

}  // namespace

void register_pending_usage_callbacks() {
  RegisterXactCallback(on_xact_event, nullptr);
  RegisterSubXactCallback(on_subxact_event, nullptr);
}

bool defer_usage_event(const char* record, uint32 length, int wait_ms) {
  if (!usage_queue_reserve(length, wait_ms)) return false;
  reserved += length;
  if (pending_count == pending_capacity) {
    const int capacity = pending_capacity == 0 ? kInitialCapacity : pending_capacity * 2;
    pending = static_cast<PendingEvent*>(
        pending == nullptr
            ? MemoryContextAlloc(TopTransactionContext, capacity * sizeof(PendingEvent))
            : repalloc(pending, capacity * sizeof(PendingEvent)));
    pending_capacity = capacity;
  }
  char* copy = static_cast<char*>(MemoryContextAlloc(TopTransactionContext, length));
  memcpy(copy, record, length);
  pending[pending_count++] = PendingEvent{copy, length, GetCurrentSubTransactionId()};
  return true;
}

void materialize_pending_usage() {
  // One at a time: an error aborts the transaction, and the abort callback
  // releases whatever is still reserved.
  while (pending_count > 0) {
    const PendingEvent& p = pending[0];
    insert_usage_row(decode_usage_event(p.record));
    const uint32 length = p.length;
    for (int i = 1; i < pending_count; ++i) pending[i - 1] = pending[i];
    --pending_count;
    reserved -= length;
    usage_queue_release(length);
  }
}

}  // namespace rate_limiter::pg
