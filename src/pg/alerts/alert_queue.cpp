#include "rate_limiter/pg/alerts/alert_queue.hpp"

#include <type_traits>

#include "rate_limiter/pg/shmem.hpp"
#include "rate_limiter/pg/support.hpp"
#include "rate_limiter/pg/usage.hpp"

namespace rate_limiter::pg {
namespace {

constexpr const char* kSegmentName = "rate_limiter alert queue";
constexpr const char* kTrancheName = "rate_limiter_alert_queue";
constexpr uint32 kAlertsPerChunk = 8;
constexpr uint32 kChunkBytes = kAlertsPerChunk * (kRecordLengthBytes + sizeof(AlertRecord));

// Shared memory holds only trivially copyable types.
static_assert(std::is_trivially_copyable_v<AlertRecord>);

StreamPool pool;

// rate_limiter.alert_queue_size records, in whole chunks, at least two (one
// database's share is then at least one chunk).
uint32 chunk_count() {
  const uint32 records = static_cast<uint32>(settings.alert_queue_size);
  return Max((records + kAlertsPerChunk - 1) / kAlertsPerChunk, 2u);
}

}  // namespace

SegmentRequest alert_queue_segment() {
  return StreamPool::segment(kSegmentName, kTrancheName,
                             static_cast<uint32>(configured_installation_slots()), chunk_count(),
                             kChunkBytes);
}

void attach_alert_queue_memory() {
  pool.attach(kSegmentName, kTrancheName, static_cast<uint32>(configured_installation_slots()),
              chunk_count(), kChunkBytes);
}

void alert_queue_push(int stream, const AlertRecord& record) noexcept {
  if (!pool.attached() || stream < 0 || stream >= static_cast<int>(pool.streams())) return;
  Latch* wake = nullptr;
  const bool fits =
      pool.append(stream, reinterpret_cast<const char*>(&record), sizeof record, &wake);
  metric_add(fits ? &shared->metrics.alerts_queued : &shared->metrics.alerts_dropped);
}

void wait_for_alert_flush(int stream) { wait_for_queue_drain(pool, stream, "alert queue", "."); }

StreamPool& alert_queue_pool() noexcept { return pool; }

}  // namespace rate_limiter::pg
