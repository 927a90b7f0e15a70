#include "rate_limiter/pg/engine/counter_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rate_limiter/pg/engine/hot_path.hpp"
#include "rate_limiter/pg/engine/key_budget.hpp"
#include "rate_limiter/pg/shmem.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kFile = PGSTAT_STAT_PERMANENT_DIRECTORY "/rate_limiter.counters";
constexpr const char* kTempFile = PGSTAT_STAT_PERMANENT_DIRECTORY "/rate_limiter.counters.tmp";
constexpr uint32 kFileMagic = 0x524c4331;  // "RLC1"
// Bump when CounterSlot, CounterState, the key derivation or the layout
// below changes.  3: installation tags in the keys, the installations with
// their tags, slot owners and the role map.  4: counter keys carry the
// limit's shape (core::limit_key).  5: user+endpoint scopes derive from
// the user's scope (core::user_endpoint_scope), so an older file's keys of
// those scopes name nothing; the counters are rebuilt from token_usage.
constexpr uint32 kFileVersion = 5;

struct FileHeader {
  uint32 magic;
  uint32 version;
  uint32 slot_size;  // sizeof(core::CounterSlot), a cheap layout check
  uint32 reserved;
  uint64 entries;                        // counter slots, after the header
  uint64 installations;                  // SavedInstallation each, after the slots
  core::SipKey hash_key;                 // the slots' keys are keyed hashes under this key
  Oid key_owners[core::kMaxOwners + 1];  // key_budget.hpp's role map
};

// A live installation of the registry: its keys carry `tag`.
struct SavedInstallation {
  uint64 installation;
  uint16 tag;
  uint16 counters_complete;
  uint32 reserved;
};

}  // namespace

// An immediate shutdown (pg_ctl stop -m immediate) also ends the
// postmaster with exit code 0, but without the shutdown checkpoint, after
// killing backends that may have been half way through a counter update:
// then no file is written and the next start rebuilds.
bool server_shut_down_cleanly() {
  char path[MAXPGPATH];
  snprintf(path, sizeof path, "%s/%s", DataDir, XLOG_CONTROL_FILE);
  const int fd = ::open(path, O_RDONLY | PG_BINARY, 0);
  if (fd < 0) return false;
  ControlFileData control;
  const ssize_t n = ::read(fd, &control, sizeof control);
  ::close(fd);
  return n == static_cast<ssize_t>(sizeof control) && control.state == DB_SHUTDOWNED;
}

namespace {

bool starting_in_recovery() {
  struct stat st;
  return ::stat(STANDBY_SIGNAL_FILE, &st) == 0 || ::stat(RECOVERY_SIGNAL_FILE, &st) == 0;
}

// Reads the whole file into palloc'd memory; nullptr when absent.
char* read_file(Size* size) {
  FILE* f = AllocateFile(kFile, PG_BINARY_R);
  if (f == nullptr) {
    if (errno != ENOENT)
      ereport(LOG, (errcode_for_file_access(),
                    errmsg("rate_limiter: could not open \"%s\": %m", kFile)));
    return nullptr;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || st.st_size > (off_t)MaxAllocHugeSize) {
    FreeFile(f);
    ereport(LOG, (errmsg("rate_limiter: ignoring \"%s\": unreadable size", kFile)));
    return nullptr;
  }
  *size = static_cast<Size>(st.st_size);
  char* data = static_cast<char*>(palloc_extended(Max(*size, 1), MCXT_ALLOC_HUGE));
  const bool ok = fread(data, 1, *size, f) == *size;
  FreeFile(f);
  if (!ok) {
    ereport(LOG, (errmsg("rate_limiter: ignoring \"%s\": short read", kFile)));
    pfree(data);
    return nullptr;
  }
  return data;
}

// The file's reason for being ignored, or nullptr when it is sound.
const char* check_file(const char* data, Size size, FileHeader* header) {
  if (size < sizeof(FileHeader) + sizeof(pg_crc32c)) return "too short";
  memcpy(header, data, sizeof(FileHeader));
  if (header->magic != kFileMagic) return "bad magic number";
  if (header->version != kFileVersion || header->slot_size != sizeof(core::CounterSlot))
    return "written by another version";
  const Size body = size - sizeof(pg_crc32c);
  if (header->entries > body / sizeof(core::CounterSlot) ||
      header->installations > static_cast<uint64>(kMaxInstallationSlots) ||
      body != sizeof(FileHeader) + header->entries * sizeof(core::CounterSlot) +
                  header->installations * sizeof(SavedInstallation))
    return "size does not match its entry count (torn write?)";
  pg_crc32c expected, actual;
  memcpy(&expected, data + body, sizeof expected);
  INIT_CRC32C(actual);
  COMP_CRC32C(actual, data, body);
  FIN_CRC32C(actual);
  if (!EQ_CRC32C(actual, expected)) return "checksum mismatch";
  return nullptr;
}

}  // namespace

void load_counter_file() {
  Size size = 0;
  char* data = read_file(&size);
  if (data == nullptr) return;  // no file: a first start, or the last stop was a crash

  FileHeader header;
  const char* problem =
      starting_in_recovery() ? "the server starts in recovery" : check_file(data, size, &header);
  if (problem != nullptr) {
    ereport(LOG, (errmsg("rate_limiter: ignoring saved counters in \"%s\": %s", kFile, problem),
                  errdetail("Counters will be rebuilt from token_usage.")));
  } else {
    // The saved keys are hashes under the saved key: keep using it.
    shared->hash_key = header.hash_key;
    restore_key_owners(header.key_owners);
    const int64 now = limiter_now_unix();
    const auto* slots = reinterpret_cast<const core::CounterSlot*>(data + sizeof(FileHeader));
    const auto* installations = reinterpret_cast<const SavedInstallation*>(
        data + sizeof(FileHeader) + header.entries * sizeof(core::CounterSlot));
    // The installations first: a counter whose tag finds no slot (the slot
    // count was lowered) is dropped with its installation.
    uint64 stored = 0, dropped = 0;
    bool* tag_restored = static_cast<bool*>(palloc0(sizeof(bool) * (1 << 16)));
    for (uint64 i = 0; i < header.installations; ++i) {
      const SavedInstallation& si = installations[i];
      tag_restored[si.tag] = restore_installation(si.installation, si.tag, false);
    }
    for (uint64 i = 0; i < header.entries; ++i) {
      const core::CounterSlot& s = slots[i];
      if (s.key.is_zero() || !tag_restored[core::tag_of(s.key)]) continue;
      // No locks: the postmaster runs this before any other process exists.
      const uint32 p = core::partition_of(s.key, shared->geometry.partitions);
      if (counter_partition(p).store(s.key, s.state, now, core::CounterPartition::owner_of(s)))
        ++stored;
      else
        ++dropped;
    }
    metric_add(&shared->metrics.keys_in_use, stored);
    // Counters that did not fit (rate_limiter.max_keys was lowered) would
    // restart from zero: then no installation counts as complete, and each
    // is rebuilt from the table (the merge keeps what was loaded).
    if (dropped == 0) {
      for (uint64 i = 0; i < header.installations; ++i) {
        const SavedInstallation& si = installations[i];
        if (si.counters_complete != 0 && tag_restored[si.tag])
          if (InstallationSlot* slot = find_installation(si.installation))
            slot->counters_state = CountersState::Complete;
      }
    }
    pfree(tag_restored);
    ereport(
        LOG,
        (errmsg("rate_limiter: loaded " UINT64_FORMAT " saved counters from \"%s\"", stored, kFile),
         dropped > 0
             ? errdetail(UINT64_FORMAT " did not fit; counters will be rebuilt from token_usage.",
                         dropped)
             : 0));
  }
  pfree(data);
  // Never load the same file twice: after a crash it would be stale.
  if (unlink(kFile) != 0 && errno != ENOENT)
    ereport(LOG, (errcode_for_file_access(),
                  errmsg("rate_limiter: could not remove \"%s\": %m", kFile)));
}

void save_counter_file_at_exit(int code, Datum) {
  // Only at a clean shutdown: after a crash or an immediate shutdown shared
  // memory is not trusted.
  if (code != 0 || shared == nullptr || !server_shut_down_cleanly()) return;
  FILE* f = AllocateFile(kTempFile, PG_BINARY_W);
  if (f == nullptr) {
    ereport(LOG, (errcode_for_file_access(),
                  errmsg("rate_limiter: could not write \"%s\": %m", kTempFile)));
    return;
  }
  FileHeader header{};
  header.magic = kFileMagic;
  header.version = kFileVersion;
  header.slot_size = sizeof(core::CounterSlot);
  header.hash_key = shared->hash_key;
  save_key_owners(header.key_owners);
  // Count first: the header precedes the slots.  Every other process has
  // exited, so the table cannot change in between.  Counters of dropped
  // installations (a dead tag) are not saved.
  const volatile uint8* live = installation_tag_live();
  for (uint32 p = 0; p < shared->geometry.partitions; ++p)
    counter_partition(p).for_each([&](const core::CounterSlot& s) {
      if (live[core::tag_of(s.key)] != 0) ++header.entries;
    });
  SavedInstallation* complete = static_cast<SavedInstallation*>(
      palloc0(sizeof(SavedInstallation) * Max(installation_slot_count(), 1)));
  const InstallationSlot* registry = installation_slots();
  for (int i = 0; i < installation_slot_count(); ++i) {
    const InstallationSlot& e = registry[i];
    if (e.installation == 0 || e.dropping) continue;
    SavedInstallation& si = complete[header.installations++];
    si.installation = e.installation;
    si.tag = e.tag;
    si.counters_complete = e.counters_state == CountersState::Complete ? 1 : 0;
  }
  pg_crc32c crc;
  INIT_CRC32C(crc);
  bool ok = fwrite(&header, sizeof header, 1, f) == 1;
  COMP_CRC32C(crc, &header, sizeof header);
  uint64 written = 0;
  for (uint32 p = 0; ok && p < shared->geometry.partitions; ++p) {
    core::CounterPartition part = counter_partition(p);
    part.for_each([&](const core::CounterSlot& s) {
      if (!ok || live[core::tag_of(s.key)] == 0) return;
      ok = fwrite(&s, sizeof s, 1, f) == 1;
      COMP_CRC32C(crc, &s, sizeof s);
      ++written;
    });
  }
  if (ok && header.installations > 0) {
    ok = fwrite(complete, sizeof(SavedInstallation), header.installations, f) ==
         header.installations;
    COMP_CRC32C(crc, complete, header.installations * sizeof(SavedInstallation));
  }
  FIN_CRC32C(crc);
  ok = ok && written == header.entries && fwrite(&crc, sizeof crc, 1, f) == 1;
  if (FreeFile(f) != 0) ok = false;
  if (!ok) {
    ereport(LOG, (errcode_for_file_access(),
                  errmsg("rate_limiter: could not write \"%s\": %m", kTempFile)));
    unlink(kTempFile);
    return;
  }
  (void)durable_rename(kTempFile, kFile, LOG);
}

}  // namespace rate_limiter::pg
