#include "rate_limiter/pg/shmem/stream_pool.hpp"

#include <type_traits>

#include "rate_limiter/pg/support.hpp"

namespace rate_limiter::pg {

struct StreamPool::Header {
  uint32 nstreams;
  uint32 nchunks;
  uint32 chunk_bytes;
  uint32 reserved;
  slock_t free_lock;  // guards free_head, free_count and the free chunks' `next`
  int32 free_head;
  uint32 free_count;
  ConditionVariable space;
};

struct StreamPool::Stream {
  uint64 head;     // record bytes ever appended
  uint64 tail;     // record bytes ever consumed; only the consumer moves it
  uint64 records;  // in [tail, head)
  int32 head_chunk;
  int32 tail_chunk;
  uint32 chunks;  // linked to the chain, or reserved by pending transactions
  uint32
      reserved;  // of those, reserved (reserve_chunk() .. commit_reserved() / release_reserved())
  int32 consumer_pid;
  Latch* consumer_latch;
  ConditionVariable progress;
};

struct StreamPool::Chunk {
  uint64 start;   // position of the chunk's first record
  int32 next;     // the next chunk of the chain (or of the free list)
  uint32 fill;    // commit_reserved(): bytes packed into a reserved chunk
  uint64 packed;  // commit_reserved(): records packed into it
};

static_assert(std::is_trivially_copyable_v<StreamWindow>);

// The segment: header, streams, chunk headers, chunk bytes.
Size StreamPool::header_bytes() noexcept { return MAXALIGN(sizeof(Header)); }

Size StreamPool::segment_bytes(uint32 streams, uint32 chunks, uint32 chunk_bytes) {
  Size size = header_bytes();
  size = add_size(size, MAXALIGN(mul_size(streams, sizeof(Stream))));
  size = add_size(size, MAXALIGN(mul_size(chunks, sizeof(Chunk))));
  size = add_size(size, mul_size(chunks, chunk_bytes));
  return size;
}

SegmentRequest StreamPool::segment(const char* segment, const char* tranche, uint32 streams,
                                   uint32 chunks, uint32 chunk_bytes) {
  return {segment, segment_bytes(streams, chunks, chunk_bytes), tranche, static_cast<int>(streams)};
}

void StreamPool::attach(const char* segment, const char* tranche, uint32 streams, uint32 chunks,
                        uint32 chunk_bytes) {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  header_ = static_cast<Header*>(
      ShmemInitStruct(segment, segment_bytes(streams, chunks, chunk_bytes), &found));
  locks_ = GetNamedLWLockTranche(tranche);
  if (!found) {
    header_->nstreams = streams;
    header_->nchunks = chunks;
    header_->chunk_bytes = chunk_bytes;
    header_->reserved = 0;
    SpinLockInit(&header_->free_lock);
    ConditionVariableInit(&header_->space);
    for (uint32 i = 0; i < streams; ++i) {
      Stream* s = stream_state(static_cast<int>(i));
      s->head = s->tail = s->records = 0;
      s->head_chunk = s->tail_chunk = kNoChunk;
      s->chunks = 0;
      s->reserved = 0;
      s->consumer_pid = 0;
      s->consumer_latch = nullptr;
      ConditionVariableInit(&s->progress);
    }
    for (uint32 i = 0; i < chunks; ++i) {
      Chunk* c = chunk(static_cast<int32>(i));
      c->start = 0;
      c->next = i + 1 < chunks ? static_cast<int32>(i + 1) : kNoChunk;
      c->fill = 0;
      c->packed = 0;
    }
    header_->free_head = chunks > 0 ? 0 : kNoChunk;
    header_->free_count = chunks;
  }
  LWLockRelease(AddinShmemInitLock);
}

StreamPool::Stream* StreamPool::stream_state(int stream) const noexcept {
  char* base = reinterpret_cast<char*>(header_) + header_bytes();
  return reinterpret_cast<Stream*>(base) + stream;
}

StreamPool::Chunk* StreamPool::chunk(int32 index) const noexcept {
  char* base = reinterpret_cast<char*>(header_) + header_bytes() +
               MAXALIGN(header_->nstreams * sizeof(Stream));
  return reinterpret_cast<Chunk*>(base) + index;
}

char* StreamPool::data(int32 index) const noexcept {
  char* base = reinterpret_cast<char*>(header_) + header_bytes() +
               MAXALIGN(header_->nstreams * sizeof(Stream)) +
               MAXALIGN(header_->nchunks * sizeof(Chunk));
  return base + static_cast<Size>(index) * header_->chunk_bytes;
}

LWLock* StreamPool::lock(int stream) const noexcept { return &locks_[stream].lock; }

uint32 StreamPool::streams() const noexcept { return header_->nstreams; }

uint32 StreamPool::chunk_bytes() const noexcept { return header_->chunk_bytes; }

uint32 StreamPool::stream_cap() const noexcept {
  const double cap = settings.database_queue_share * header_->nchunks;
  return Max(1u, static_cast<uint32>(cap));
}

int32 StreamPool::pop_free() noexcept {
  SpinLockAcquire(&header_->free_lock);
  const int32 index = header_->free_head;
  if (index != kNoChunk) {
    header_->free_head = chunk(index)->next;
    header_->free_count -= 1;
  }
  SpinLockRelease(&header_->free_lock);
  if (index != kNoChunk) chunk(index)->next = kNoChunk;
  return index;
}

void StreamPool::push_free(int32 index) noexcept {
  SpinLockAcquire(&header_->free_lock);
  chunk(index)->next = header_->free_head;
  header_->free_head = index;
  header_->free_count += 1;
  SpinLockRelease(&header_->free_lock);
}

// Stream lock held.  Puts `index` after the head chunk (marking the rest of
// the head chunk as skipped) as the chunk of the next record.
void StreamPool::link_chunk(Stream* s, int32 index) noexcept {
  Chunk* c = chunk(index);
  c->start = s->head;
  c->next = kNoChunk;
  if (s->head_chunk == kNoChunk) {
    s->tail_chunk = index;
  } else {
    Chunk* h = chunk(s->head_chunk);
    const uint64 offset = s->head - h->start;
    if (offset + kRecordLengthBytes <= header_->chunk_bytes) {
      const uint32 skip = 0;
      memcpy(data(s->head_chunk) + offset, &skip, sizeof skip);
    }
    h->next = index;
  }
  s->head_chunk = index;
}

bool StreamPool::append(int stream, const char* record, uint32 length, Latch** wake) noexcept {
  const uint32 cap = stream_cap();
  Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  const bool done = append_locked(s, record, length, cap);
  // Past half its share (or full) the consumer should not wait for its
  // next interval.
  *wake = (!done || s->chunks * 2 > cap) ? s->consumer_latch : nullptr;
  LWLockRelease(lock(stream));
  return done;
}

bool StreamPool::append_locked(Stream* s, const char* record, uint32 length, uint32 cap) noexcept {
  const uint64 need = kRecordLengthBytes + static_cast<uint64>(length);
  int32 target = kNoChunk;
  uint64 offset = 0;
  if (s->head_chunk != kNoChunk &&
      s->head - chunk(s->head_chunk)->start + need <= header_->chunk_bytes) {
    target = s->head_chunk;
    offset = s->head - chunk(target)->start;
  } else if (s->chunks < cap && need <= header_->chunk_bytes) {
    target = pop_free();
    if (target != kNoChunk) {
      s->chunks += 1;
      link_chunk(s, target);
    }
  }
  if (target != kNoChunk) {
    char* p = data(target) + offset;
    memcpy(p, &length, sizeof length);
    memcpy(p + kRecordLengthBytes, record, length);
    s->head += need;
    s->records += 1;
  }
  return target != kNoChunk;
}

StreamWindow StreamPool::quiescent_window(int stream) const noexcept {
  const Stream* s = stream_state(stream);
  return StreamWindow{s->tail, s->head, s->tail_chunk};
}

bool StreamPool::quiescent_append(int stream, const char* record, uint32 length) noexcept {
  return append_locked(stream_state(stream), record, length, header_->nchunks);
}

int32 StreamPool::reserve_chunk(int stream, uint32 caller_held, uint32 caller_cap,
                                bool* capped) noexcept {
  const uint32 cap = stream_cap();
  const uint32 reservations_cap = Max(1u, cap / 2);
  Stream* s = stream_state(stream);
  int32 index = kNoChunk;
  *capped = caller_held >= Max(1u, caller_cap);
  if (*capped) return kNoChunk;
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  if (s->reserved >= reservations_cap) {
    *capped = true;
  } else if (s->chunks < cap) {
    index = pop_free();
    if (index != kNoChunk) {
      s->chunks += 1;
      s->reserved += 1;
    }
  }
  LWLockRelease(lock(stream));
  return index;
}

void NextFitPacking::add(uint32 length, uint32 chunk_bytes) noexcept {
  const uint64 need = kRecordLengthBytes + static_cast<uint64>(length);
  if (chunks == 0 || offset + need > chunk_bytes) {
    ++chunks;
    offset = 0;
  }
  offset += need;
}

Latch* StreamPool::commit_reserved(int stream, const int32* chunks, int nchunks,
                                   const StreamRecord* records, int nrecords) noexcept {
  // Packed without the lock: the chunks are this backend's until linked.
  // The packing is NextFitPacking's, the one the reservation counted, so
  // `chunks` suffice.
  NextFitPacking packing;
  for (int r = 0; r < nrecords; ++r) {
    const uint32 before = packing.chunks;
    packing.add(records[r].length, header_->chunk_bytes);
    if (packing.chunks > static_cast<uint32>(nchunks)) break;  // not reached (see above)
    Chunk* c = chunk(chunks[packing.chunks - 1]);
    if (packing.chunks != before) {
      c->fill = 0;
      c->packed = 0;
    }
    char* p = data(chunks[packing.chunks - 1]) + c->fill;
    memcpy(p, &records[r].length, sizeof records[r].length);
    memcpy(p + kRecordLengthBytes, records[r].bytes, records[r].length);
    c->fill = static_cast<uint32>(packing.offset);
    c->packed += 1;
  }
  const int used = Min(static_cast<int>(packing.chunks), nchunks);
  Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  for (int k = 0; k < used; ++k) {
    const uint32 fill = chunk(chunks[k])->fill;
    const uint64 packed = chunk(chunks[k])->packed;
    link_chunk(s, chunks[k]);
    s->head += fill;
    s->records += packed;
  }
  for (int k = used; k < nchunks; ++k) {
    push_free(chunks[k]);
    s->chunks -= 1;
  }
  s->reserved -= Min(s->reserved, static_cast<uint32>(Max(nchunks, 0)));
  Latch* latch = s->consumer_latch;
  LWLockRelease(lock(stream));
  if (used < nchunks) ConditionVariableBroadcast(&header_->space);
  return latch;
}

void StreamPool::release_reserved(int stream, const int32* chunks, int nchunks) noexcept {
  if (nchunks == 0) return;
  Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  for (int k = 0; k < nchunks; ++k) {
    push_free(chunks[k]);
    s->chunks -= 1;
  }
  s->reserved -= Min(s->reserved, static_cast<uint32>(nchunks));
  LWLockRelease(lock(stream));
  ConditionVariableBroadcast(&header_->space);
}

bool StreamPool::attach_consumer(int stream, Latch* latch) noexcept {
  Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  const bool free = s->consumer_pid == 0 || s->consumer_pid == MyProcPid;
  if (free) {
    s->consumer_pid = MyProcPid;
    s->consumer_latch = latch;
  }
  LWLockRelease(lock(stream));
  return free;
}

void StreamPool::detach_consumer(int stream) noexcept {
  Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  if (s->consumer_pid == MyProcPid) {
    s->consumer_pid = 0;
    s->consumer_latch = nullptr;
  }
  LWLockRelease(lock(stream));
}

StreamWindow StreamPool::window(int stream) const noexcept {
  const Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_SHARED);
  const StreamWindow w{s->tail, s->head, s->tail_chunk};
  LWLockRelease(lock(stream));
  return w;
}

// Moves the cursor over a chunk end to the record it stands before;
// false if the chain is broken (cannot happen with a cursor inside a
// window read under the lock).
bool StreamPool::resolve(StreamCursor* cursor) const noexcept {
  for (int hops = 0; cursor->chunk != kNoChunk && hops <= static_cast<int>(header_->nchunks);
       ++hops) {
    const Chunk* c = chunk(cursor->chunk);
    const uint64 offset = cursor->position - c->start;
    if (offset + kRecordLengthBytes <= header_->chunk_bytes) {
      uint32 length;
      memcpy(&length, data(cursor->chunk) + offset, sizeof length);
      if (length != 0) return offset + kRecordLengthBytes + length <= header_->chunk_bytes;
    }
    cursor->chunk = c->next;
  }
  return false;
}

const char* StreamPool::read(StreamCursor* cursor, uint32* length) const noexcept {
  if (!resolve(cursor)) return nullptr;
  const uint64 offset = cursor->position - chunk(cursor->chunk)->start;
  const char* p = data(cursor->chunk) + offset;
  memcpy(length, p, sizeof *length);
  cursor->position += kRecordLengthBytes + *length;
  cursor->records += 1;
  return p + kRecordLengthBytes;
}

void StreamPool::consume(int stream, const StreamCursor& cursor) noexcept {
  if (cursor.records == 0) return;
  Stream* s = stream_state(stream);
  bool freed = false;
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  int32 c = s->tail_chunk;
  while (c != kNoChunk && c != cursor.chunk) {
    const int32 next = chunk(c)->next;
    push_free(c);
    s->chunks -= 1;
    freed = true;
    c = next;
  }
  s->tail_chunk = cursor.chunk;
  s->tail = cursor.position;
  s->records -= cursor.records;
  // Empty: its last chunk goes back too, so that an idle database holds
  // nothing of the pool.  (The head chunk is then the cursor's: every
  // chunk linked after it carries a record, which would be past the tail.)
  if (s->tail == s->head && s->head_chunk != kNoChunk) {
    push_free(s->head_chunk);
    s->chunks -= 1;
    s->head_chunk = s->tail_chunk = kNoChunk;
    freed = true;
  }
  LWLockRelease(lock(stream));
  ConditionVariableBroadcast(&s->progress);
  if (freed) ConditionVariableBroadcast(&header_->space);
}

bool StreamPool::discard(int stream) noexcept {
  Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_EXCLUSIVE);
  if (s->consumer_pid != 0 && s->consumer_pid != MyProcPid) {
    LWLockRelease(lock(stream));
    return false;
  }
  bool freed = false;
  int32 c = s->head_chunk != kNoChunk ? s->tail_chunk : kNoChunk;
  while (c != kNoChunk) {
    const int32 next = chunk(c)->next;
    const bool last = c == s->head_chunk;
    push_free(c);
    s->chunks -= 1;
    freed = true;
    c = last ? kNoChunk : next;
  }
  s->tail = s->head;
  s->records = 0;
  s->head_chunk = s->tail_chunk = kNoChunk;
  LWLockRelease(lock(stream));
  ConditionVariableBroadcast(&s->progress);
  if (freed) ConditionVariableBroadcast(&header_->space);
  return true;
}

Latch* StreamPool::consumer_latch(int stream) const noexcept {
  const Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_SHARED);
  Latch* latch = s->consumer_latch;
  LWLockRelease(lock(stream));
  return latch;
}

bool StreamPool::peek_oldest(int stream, char* out, uint32 max) const noexcept {
  const Stream* s = stream_state(stream);
  bool found = false;
  LWLockAcquire(lock(stream), LW_SHARED);
  if (s->tail != s->head) {
    StreamCursor cursor{s->tail, s->tail_chunk, 0};
    uint32 length = 0;
    if (const char* record = read(&cursor, &length)) {
      memcpy(out, record, Min(length, max));
      found = true;
    }
  }
  LWLockRelease(lock(stream));
  return found;
}

uint64 StreamPool::stream_records(int stream) const noexcept {
  const Stream* s = stream_state(stream);
  LWLockAcquire(lock(stream), LW_SHARED);
  const uint64 records = s->records;
  LWLockRelease(lock(stream));
  return records;
}

StreamTotals StreamPool::totals() const noexcept {
  StreamTotals t{0, 0, header_->nchunks, header_->chunk_bytes};
  for (uint32 i = 0; i < header_->nstreams; ++i) t.records += stream_records(static_cast<int>(i));
  SpinLockAcquire(&header_->free_lock);
  t.chunks_in_use = header_->nchunks - header_->free_count;
  SpinLockRelease(&header_->free_lock);
  return t;
}

ConditionVariable* StreamPool::progress(int stream) const noexcept {
  return &stream_state(stream)->progress;
}

ConditionVariable* StreamPool::space() const noexcept { return &header_->space; }

}  // namespace rate_limiter::pg
