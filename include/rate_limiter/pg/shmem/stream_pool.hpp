// Per-database FIFO streams carved from one shared pool of chunks: the
// storage of the usage queue (usage_queue.hpp) and of the alert queue
// (alert_queue.hpp).
//
// Why: each database has its own worker (database_worker.hpp) that drains
// only its own database's records.  With one ring and one tail, a database
// whose worker is slow, stuck or missing would hold the tail, and every
// other database would find the queue full.  Here every installation slot
// (installations.hpp; the stream number is the slot's index) has its own
// stream with its own head and tail, and a stream may hold at most its cap
// of the pool's chunks (rate_limiter.database_queue_share): a stuck
// database fills its share and then its own callers fall back, the others
// keep theirs.
//
// Layout (in one shared-memory segment per pool): a header, one
// StreamState per stream, one ChunkHeader per chunk, then the chunks'
// bytes.  A chunk belongs to the free list, to one stream's chain
// (tail_chunk -> ... -> head_chunk through `next`), or privately to one
// backend's pending transaction (a reservation, below).  Records are
// [uint32 length][bytes] and never span chunks; a length word of 0, or less
// than 4 bytes left, means "continued in the next chunk".  Positions are
// bytes of records (with their length words) ever appended to / consumed
// from the stream: they only grow, padding at a chunk's end is not counted,
// and a chunk's `start` is the position of its first record.
//
// Locking
//  - Stream s is guarded by LWLock s of the pool's tranche: producers hold
//    it exclusively to check the room, memcpy one record and link a chunk;
//    nothing under it can ereport or allocate.
//  - The free list is guarded by a spinlock taken only inside a stream lock
//    or alone, around a few instructions (lock order: stream lock, then the
//    free-list spinlock; no two stream locks at once).
//  - One consumer per stream (the database's worker, attach_consumer())
//    reads the records of [tail, head) WITHOUT the lock: producers never
//    write there, and chunks are freed only by consume() and discard(),
//    which only the attached consumer (or anyone, while none is attached)
//    calls.  The window is read under the lock, which orders the producers'
//    writes before the consumer's reads.
//  - `progress` (per stream) is broadcast when the tail advances; `space`
//    (per pool) when chunks return to the free list.
#pragma once

#include "rate_limiter/pg/shmem/segment.hpp"

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

constexpr int32 kNoChunk = -1;
constexpr uint32 kRecordLengthBytes = sizeof(uint32);

// [tail, head) of one stream, read under its lock.
struct StreamWindow {
  uint64 tail;
  uint64 head;
  int32 tail_chunk;
};

// Where the consumer stands in a window it reads.
struct StreamCursor {
  uint64 position;
  int32 chunk;
  uint64 records;  // read since the window's tail
};

struct StreamTotals {
  uint64 records;
  uint64 chunks_in_use;  // linked to a stream or reserved
  uint64 chunks;
  uint32 chunk_bytes;
};

// One record to append: its bytes and length.
struct StreamRecord {
  const char* bytes;
  uint32 length;
};

// Next-fit packing of records into chunks, as commit_reserved() packs
// them: a record goes to a new chunk when it does not fit in the current
// one.  Dropping records from a sequence never raises the count (each chunk
// of the shorter sequence starts at or after the same record of the longer
// one), which is what lets a rolled-back savepoint give chunks back.
struct NextFitPacking {
  uint32 chunks = 0;
  uint64 offset = 0;
  void add(uint32 length, uint32 chunk_bytes) noexcept;
};

// A process-local handle on one pool.  Every method but segment()/attach()
// is noexcept and safe in transaction callbacks.
class StreamPool {
 public:
  // From the shmem request / startup hooks.
  static SegmentRequest segment(const char* segment, const char* tranche, uint32 streams,
                                uint32 chunks, uint32 chunk_bytes);
  void attach(const char* segment, const char* tranche, uint32 streams, uint32 chunks,
              uint32 chunk_bytes);
  bool attached() const noexcept { return header_ != nullptr; }

  uint32 streams() const noexcept;
  uint32 chunk_bytes() const noexcept;
  // The most chunks one stream may hold: rate_limiter.database_queue_share
  // of the pool, at least one.
  uint32 stream_cap() const noexcept;

  // Producer side.  Appends one record (length <= chunk_bytes() - 4); false
  // when the stream is at its cap or the pool is empty.  *wake is the
  // consumer's latch when the stream passed half its cap (or is full):
  // set it after the call.
  bool append(int stream, const char* record, uint32 length, Latch** wake) noexcept;

  // Reservations for records appended at commit (usage_pending.hpp): a
  // whole chunk taken now, counted against the stream's cap, filled and
  // linked by commit_reserved() (which therefore cannot fail) or given back
  // by release_reserved().  kNoChunk when none is available: the stream is
  // at its cap or the pool is empty (*capped false), or the caller already
  // holds `caller_cap` reserved chunks of it, or the stream's reservations
  // together hold half its cap (*capped true: plain appends always keep
  // the other half, so transactions that hold reservations until they end
  // cannot starve the callers that append at once).
  int32 reserve_chunk(int stream, uint32 caller_held, uint32 caller_cap, bool* capped) noexcept;
  // Packs the records in order into `chunks` (NextFitPacking; the caller
  // reserved as many chunks as that packing needs), links the used ones at
  // the stream's head and frees the rest.  Returns the consumer's latch.
  Latch* commit_reserved(int stream, const int32* chunks, int nchunks, const StreamRecord* records,
                         int nrecords) noexcept;
  void release_reserved(int stream, const int32* chunks, int nchunks) noexcept;

  // Consumer side.
  bool attach_consumer(int stream, Latch* latch) noexcept;  // false: another process consumes it
  void detach_consumer(int stream) noexcept;
  StreamWindow window(int stream) const noexcept;
  // The next record at the cursor (cursor->position < window head); points
  // into shared memory, valid until consume().
  const char* read(StreamCursor* cursor, uint32* length) const noexcept;
  // After the commit that wrote them: frees everything before the cursor.
  void consume(int stream, const StreamCursor& cursor) noexcept;
  // Drops every queued record of the stream (a dropped installation).
  // Only the attached consumer or, while none is attached, anyone; false
  // otherwise (the consumer drops them itself, they are foreign to it).
  bool discard(int stream) noexcept;

  // Only while no other process can touch the pool: the postmaster before
  // the first child starts or after the last one exited (usage_queue_file.hpp).
  // No locks.  The window of a stream, and an append that ignores the
  // stream's cap (the records were queued under the cap of the server that
  // saved them); false when the pool has no room.
  StreamWindow quiescent_window(int stream) const noexcept;
  bool quiescent_append(int stream, const char* record, uint32 length) noexcept;

  // Anyone.
  Latch* consumer_latch(int stream) const noexcept;
  // Copies up to `max` bytes of the oldest queued record; false when empty.
  bool peek_oldest(int stream, char* out, uint32 max) const noexcept;
  uint64 stream_records(int stream) const noexcept;
  StreamTotals totals() const noexcept;
  ConditionVariable* progress(int stream) const noexcept;
  ConditionVariable* space() const noexcept;

 private:
  struct Header;
  struct Stream;
  struct Chunk;
  static Size header_bytes() noexcept;
  static Size segment_bytes(uint32 streams, uint32 chunks, uint32 chunk_bytes);
  Stream* stream_state(int stream) const noexcept;
  Chunk* chunk(int32 index) const noexcept;
  char* data(int32 index) const noexcept;
  LWLock* lock(int stream) const noexcept;
  int32 pop_free() noexcept;
  void push_free(int32 index) noexcept;
  void link_chunk(Stream* s, int32 index) noexcept;
  // Stream lock held (or no other process): copies the record in; false
  // when it needs a new chunk and the stream holds `cap` or none is free.
  bool append_locked(Stream* s, const char* record, uint32 length, uint32 cap) noexcept;
  bool resolve(StreamCursor* cursor) const noexcept;

  Header* header_ = nullptr;
  LWLockPadded* locks_ = nullptr;
};

}  // namespace rate_limiter::pg
