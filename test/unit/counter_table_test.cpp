#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "rate_limiter/core/counter_table.hpp"

using namespace rate_limiter::core;

namespace {

constexpr int64_t kMinute = 60 * kMicrosPerSecond;
constexpr int64_t kNow = 1'795'787'130'250'000;

struct Table {
  PartitionHeader header;
  std::vector<CounterSlot> slots;
  explicit Table(uint32_t capacity, uint32_t nslots) : slots(nslots) {
    CounterPartition::initialize(&header, slots.data(), capacity, nslots);
  }
  CounterPartition view() { return CounterPartition(&header, slots.data()); }
};

Hash128 key_of(uint64_t i) {
  // Deliberately clustered homes: consecutive lo values land in neighbouring
  // slots, which exercises probe runs and backward shifts.
  return Hash128{i * 0x9e3779b97f4a7c15ULL + 1, i << 58};
}

}  // namespace

TEST(Geometry, SmallTablesHaveOnePartitionAndExactCapacity) {
  TableGeometry g = geometry_for(100);
  EXPECT_EQ(g.partitions, 1u);
  EXPECT_EQ(g.capacity_per_partition, 100u);
  EXPECT_GT(g.slots_per_partition, 100u);
}

TEST(Geometry, LargeTablesSpreadOverPartitionsWithSlack) {
  TableGeometry g = geometry_for(1'000'000);
  EXPECT_EQ(g.partitions, kMaxPartitions);
  EXPECT_GE(g.total_capacity(), 1'000'000u);
  EXPECT_LE(g.total_capacity(), 1'060'000u);  // slack stays around 5%
  EXPECT_GE(g.slots_per_partition * 3u, g.capacity_per_partition * 4u);
}

TEST(CounterPartition, AcquireFindsTheSameSlot) {
  Table t(10, 14);
  uint32_t evicted;
  CounterSlot* a = t.view().acquire(key_of(1), kMinute, kNow, &evicted);
  ASSERT_NE(a, nullptr);
  a->state.used = 5;
  CounterSlot* again = t.view().acquire(key_of(1), kMinute, kNow, &evicted);
  EXPECT_EQ(a, again);
  EXPECT_EQ(again->state.used, 5);
  EXPECT_EQ(t.view().count(), 1u);
}

TEST(CounterPartition, FullOfLiveCountersRefusesNewKeys) {
  Table t(4, 6);
  uint32_t evicted;
  for (uint64_t i = 0; i < 4; ++i) ASSERT_NE(t.view().acquire(key_of(i), kMinute, kNow, &evicted), nullptr);
  EXPECT_EQ(t.view().acquire(key_of(99), kMinute, kNow, &evicted), nullptr);
  EXPECT_EQ(evicted, 0u);
  // Existing keys are still served.
  EXPECT_NE(t.view().acquire(key_of(2), kMinute, kNow, &evicted), nullptr);
}

TEST(CounterPartition, ExpiredCountersAreEvictedFirst) {
  Table t(4, 6);
  uint32_t evicted;
  ASSERT_NE(t.view().acquire(key_of(0), kMinute, kNow, &evicted), nullptr);           // minute window
  ASSERT_NE(t.view().acquire(key_of(1), 60 * kMinute, kNow, &evicted), nullptr);      // hour window
  ASSERT_NE(t.view().acquire(key_of(2), 60 * kMinute, kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(3), kMinute, kNow, &evicted), nullptr);
  const int64_t later = kNow + 2 * kMinute;  // the minute windows ended, the hour ones did not
  CounterSlot* fresh = t.view().acquire(key_of(7), kMinute, later, &evicted);
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(evicted, 2u);
  EXPECT_EQ(t.view().count(), 3u);
  EXPECT_NE(t.view().find(key_of(1)), nullptr);
  EXPECT_NE(t.view().find(key_of(2)), nullptr);
  EXPECT_EQ(t.view().find(key_of(0)), nullptr);
}

TEST(CounterPartition, EvictionHintSkipsUselessScans) {
  Table t(2, 3);
  uint32_t evicted;
  ASSERT_NE(t.view().acquire(key_of(0), kMinute, kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(1), kMinute, kNow, &evicted), nullptr);
  EXPECT_EQ(t.view().acquire(key_of(2), kMinute, kNow, &evicted), nullptr);
  EXPECT_GT(t.header.earliest_expiry, kNow);
  EXPECT_EQ(t.view().acquire(key_of(2), kMinute, t.header.earliest_expiry, &evicted) != nullptr, true);
}

TEST(CounterPartition, EvictionShiftsEarlierSlotsSoPointersMustBeFoundAgain) {
  // key_of(0..3) share home slot 0 and occupy slots 0..3.  Keys 0..2 have
  // minute windows, key 3 an hour window.
  Table t(4, 6);
  uint32_t evicted;
  for (uint64_t i = 0; i < 3; ++i) ASSERT_NE(t.view().acquire(key_of(i), kMinute, kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(3), 60 * kMinute, kNow, &evicted), nullptr);
  const int64_t later = kNow + 2 * kMinute;
  CounterSlot* first = t.view().acquire(key_of(3), 60 * kMinute, later, &evicted);
  ASSERT_NE(first, nullptr);
  first->state.used = 7;
  // Acquiring a new key evicts keys 0..2 and shifts key 3 back towards its home.
  ASSERT_NE(t.view().acquire(key_of(9), kMinute, later, &evicted), nullptr);
  EXPECT_EQ(evicted, 3u);
  EXPECT_NE(first->key, key_of(3)) << "the earlier pointer no longer names key 3";
  CounterSlot* again = t.view().find(key_of(3));
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->state.used, 7);
}

// Property: against a std::map model, random acquires and evictions keep
// every live key findable with its own state, whatever the probe clustering.
TEST(Property, BehavesLikeAMap) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 50; ++round) {
    const uint32_t capacity = 1 + static_cast<uint32_t>(rng() % 64);
    Table t(capacity, capacity + capacity / 3 + 1);
    std::map<uint64_t, CounterState> model;
    int64_t now = kNow;
    for (int step = 0; step < 2000; ++step) {
      now += static_cast<int64_t>(rng() % (kMinute / 4));
      const uint64_t id = rng() % 200;
      const int64_t window = (1 + static_cast<int64_t>(rng() % 3)) * kMinute;
      // The model: expired entries may be dropped when the table is full.
      uint32_t evicted = 0;
      CounterSlot* s = t.view().acquire(key_of(id), window, now, &evicted);
      if (evicted > 0) {
        for (auto it = model.begin(); it != model.end();)
          it = counter_expired(it->second, now) ? model.erase(it) : std::next(it);
      }
      if (s == nullptr) {
        ASSERT_EQ(model.count(id), 0u);
        ASSERT_EQ(model.size(), capacity);
        for (auto& [k, st] : model) ASSERT_FALSE(counter_expired(st, now)) << k;
        continue;
      }
      auto it = model.find(id);
      CounterState expected = current_window(it == model.end() ? CounterState{} : it->second, window, now);
      ASSERT_EQ(s->state.used, expected.used);
      ASSERT_EQ(s->state.window_start, expected.window_start);
      s->state.used += static_cast<int64_t>(1 + rng() % 9);
      model[id] = s->state;
      ASSERT_EQ(t.view().count(), model.size());
      for (auto& [k, st] : model) {
        CounterSlot* f = t.view().find(key_of(k));
        ASSERT_NE(f, nullptr) << "lost key " << k;
        ASSERT_EQ(f->state.used, st.used);
      }
    }
  }
}
