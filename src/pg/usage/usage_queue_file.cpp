#include "rate_limiter/pg/usage/usage_queue_file.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include "rate_limiter/pg/engine.hpp"
#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/usage/usage_queue.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kFile = PGSTAT_STAT_PERMANENT_DIRECTORY "/rate_limiter.usage_queue";
constexpr const char* kTempFile = PGSTAT_STAT_PERMANENT_DIRECTORY "/rate_limiter.usage_queue.tmp";
constexpr uint32 kFileMagic = 0x524c5131;  // "RLQ1"
// Bump when the layout below or EncodedHeader changes.
constexpr uint32 kFileVersion = 1;

struct FileHeader {
  uint32 magic;
  uint32 version;
  uint32 event_header_size;  // sizeof(EncodedHeader), a cheap layout check
  uint32 reserved;
  uint64 events;
};

// Before each event's bytes.
struct SavedEvent {
  uint64 installation;
  uint16 tag;
  uint16 reserved;
  uint32 length;
};

bool owned_by(const char* record, uint32 length, uint64 installation) {
  EncodedHeader h;
  if (length < sizeof h) return false;
  memcpy(&h, record, sizeof h);
  return (static_cast<uint64>(h.database) << 32 | h.extension) == installation;
}

// Calls f(slot, record, length) for every queued event of a live
// installation, in queue order.  No other process exists.
template <typename F>
void for_each_saved_event(F f) {
  StreamPool& pool = usage_queue_pool();
  InstallationSlot* slots = installation_slots();
  for (int i = 0; i < installation_slot_count(); ++i) {
    const InstallationSlot& slot = slots[i];
    if (slot.installation == 0 || slot.dropping != 0) continue;
    const StreamWindow w = pool.quiescent_window(i);
    StreamCursor cursor{w.tail, w.tail_chunk, 0};
    while (cursor.position < w.head) {
      uint32 length = 0;
      const char* record = pool.read(&cursor, &length);
      if (record == nullptr) break;  // a broken chain: what is readable is saved
      // Events of a former installation of the slot are dropped by its
      // worker anyway: their tables are gone.
      if (owned_by(record, length, slot.installation)) f(slot, record, length);
    }
  }
}

}  // namespace

void save_usage_queue_file_at_exit(int code, Datum) {
  // Only at a clean shutdown: after a crash or an immediate shutdown shared
  // memory is not trusted.
  if (code != 0 || shared == nullptr || !usage_queue_pool().attached() ||
      !server_shut_down_cleanly())
    return;
  FileHeader header{};
  header.magic = kFileMagic;
  header.version = kFileVersion;
  header.event_header_size = sizeof(EncodedHeader);
  for_each_saved_event([&](const InstallationSlot&, const char*, uint32) { ++header.events; });
  if (header.events == 0) {
    (void)unlink(kFile);  // none left over from a start that could not queue them
    return;
  }
  FILE* f = AllocateFile(kTempFile, PG_BINARY_W);
  if (f == nullptr) {
    ereport(LOG, (errcode_for_file_access(),
                  errmsg("rate_limiter: could not write \"%s\": %m", kTempFile)));
    return;
  }
  pg_crc32c crc;
  INIT_CRC32C(crc);
  bool ok = fwrite(&header, sizeof header, 1, f) == 1;
  COMP_CRC32C(crc, &header, sizeof header);
  uint64 written = 0;
  for_each_saved_event([&](const InstallationSlot& slot, const char* record, uint32 length) {
    if (!ok) return;
    SavedEvent e{slot.installation, slot.tag, 0, length};
    ok = fwrite(&e, sizeof e, 1, f) == 1 && fwrite(record, 1, length, f) == length;
    COMP_CRC32C(crc, &e, sizeof e);
    COMP_CRC32C(crc, record, length);
    ++written;
  });
  FIN_CRC32C(crc);
  ok = ok && written == header.events && fwrite(&crc, sizeof crc, 1, f) == 1;
  if (FreeFile(f) != 0) ok = false;
  if (!ok) {
    ereport(LOG, (errcode_for_file_access(),
                  errmsg("rate_limiter: could not write \"%s\": %m", kTempFile)));
    unlink(kTempFile);
    return;
  }
  if (durable_rename(kTempFile, kFile, LOG) == 0)
    ereport(LOG, (errmsg("rate_limiter: saved " UINT64_FORMAT " queued usage events to \"%s\"",
                         written, kFile)));
}

void load_usage_queue_file() {
  FILE* f = AllocateFile(kFile, PG_BINARY_R);
  if (f == nullptr) {
    if (errno != ENOENT)
      ereport(LOG, (errcode_for_file_access(),
                    errmsg("rate_limiter: could not open \"%s\": %m", kFile)));
    return;
  }
  struct stat st;
  Size size = 0;
  char* data = nullptr;
  if (fstat(fileno(f), &st) == 0 && st.st_size >= 0 &&
      st.st_size <= static_cast<off_t>(MaxAllocHugeSize)) {
    size = static_cast<Size>(st.st_size);
    data = static_cast<char*>(palloc_extended(Max(size, 1), MCXT_ALLOC_HUGE));
    if (fread(data, 1, size, f) != size) {
      pfree(data);
      data = nullptr;
    }
  }
  FreeFile(f);
  const char* problem = data == nullptr ? "unreadable" : nullptr;
  FileHeader header{};
  if (problem == nullptr && size < sizeof header + sizeof(pg_crc32c)) problem = "too short";
  if (problem == nullptr) {
    memcpy(&header, data, sizeof header);
    if (header.magic != kFileMagic)
      problem = "bad magic number";
    else if (header.version != kFileVersion || header.event_header_size != sizeof(EncodedHeader))
      problem = "written by another version";
  }
  const Size body = size - sizeof(pg_crc32c);
  if (problem == nullptr) {
    pg_crc32c expected, actual;
    memcpy(&expected, data + body, sizeof expected);
    INIT_CRC32C(actual);
    COMP_CRC32C(actual, data, body);
    FIN_CRC32C(actual);
    if (!EQ_CRC32C(actual, expected)) problem = "checksum mismatch";
  }
  uint64 queued = 0, no_room = 0, no_slot = 0;
  if (problem == nullptr) {
    Size at = sizeof header;
    for (uint64 i = 0; i < header.events; ++i) {
      SavedEvent e;
      if (at + sizeof e > body) break;
      memcpy(&e, data + at, sizeof e);
      at += sizeof e;
      if (e.length > body - at || e.length > kMaxEncodedEventBytes) break;
      InstallationSlot* slot = find_installation(e.installation);
      // The counter file put the installations back; if it could not (it
      // was ignored), their slots come back from here, as not complete:
      // their counters are rebuilt.
      if (slot == nullptr && restore_installation(e.installation, e.tag, false))
        slot = find_installation(e.installation);
      if (slot == nullptr)
        ++no_slot;
      else if (usage_queue_pool().quiescent_append(installation_index(slot), data + at, e.length))
        ++queued;
      else
        ++no_room;
      at += e.length;
    }
  }
  if (problem != nullptr)
    ereport(LOG,
            (errmsg("rate_limiter: ignoring saved usage events in \"%s\": %s", kFile, problem)));
  else
    ereport(LOG,
            (errmsg("rate_limiter: queued " UINT64_FORMAT " saved usage events again from \"%s\"",
                    queued, kFile)));
  if (no_room + no_slot > 0 || (problem == nullptr && queued + no_room + no_slot < header.events))
    ereport(
        WARNING,
        (errmsg("rate_limiter: " UINT64_FORMAT " saved usage events could not be queued again",
                header.events - queued),
         errdetail(UINT64_FORMAT " found no room in the usage queue (rate_limiter.usage_queue_size "
                                 "lowered?), " UINT64_FORMAT " no installation slot.",
                   no_room, no_slot)));
  if (data != nullptr) pfree(data);
  // Never queue the same events twice.
  if (unlink(kFile) != 0 && errno != ENOENT)
    ereport(LOG, (errcode_for_file_access(),
                  errmsg("rate_limiter: could not remove \"%s\": %m", kFile)));
}

}  // namespace rate_limiter::pg
