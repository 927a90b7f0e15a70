#include "rate_limiter/core/counter_table.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "rate_limiter/core/algorithm.hpp"
#include "rate_limiter/core/scope_key.hpp"

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

LimitRule fixed(int64_t window) { return LimitRule{100, window}; }

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
  CounterSlot* a = t.view().acquire(key_of(1), fixed(kMinute), kNow, &evicted);
  ASSERT_NE(a, nullptr);
  a->state.used = 5;
  CounterSlot* again = t.view().acquire(key_of(1), fixed(kMinute), kNow, &evicted);
  EXPECT_EQ(a, again);
  EXPECT_EQ(again->state.used, 5);
  EXPECT_EQ(t.view().count(), 1u);
}

TEST(CounterPartition, FullOfLiveCountersRefusesNewKeys) {
  Table t(4, 6);
  uint32_t evicted;
  for (uint64_t i = 0; i < 4; ++i)
    ASSERT_NE(t.view().acquire(key_of(i), fixed(kMinute), kNow, &evicted), nullptr);
  EXPECT_EQ(t.view().acquire(key_of(99), fixed(kMinute), kNow, &evicted), nullptr);
  EXPECT_EQ(evicted, 0u);
  // Existing keys are still served.
  EXPECT_NE(t.view().acquire(key_of(2), fixed(kMinute), kNow, &evicted), nullptr);
}

TEST(CounterPartition, ExpiredCountersAreEvictedFirst) {
  Table t(4, 6);
  uint32_t evicted;
  // Keys 0 and 3 have minute windows, keys 1 and 2 hour windows.
  ASSERT_NE(t.view().acquire(key_of(0), fixed(kMinute), kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(1), fixed(60 * kMinute), kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(2), fixed(60 * kMinute), kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(3), fixed(kMinute), kNow, &evicted), nullptr);
  const int64_t later = kNow + 2 * kMinute;  // the minute windows ended, the hour ones did not
  CounterSlot* fresh = t.view().acquire(key_of(7), fixed(kMinute), later, &evicted);
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
  ASSERT_NE(t.view().acquire(key_of(0), fixed(kMinute), kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(1), fixed(kMinute), kNow, &evicted), nullptr);
  EXPECT_EQ(t.view().acquire(key_of(2), fixed(kMinute), kNow, &evicted), nullptr);
  EXPECT_GT(t.header.earliest_expiry, kNow);
  EXPECT_NE(t.view().acquire(key_of(2), fixed(kMinute), t.header.earliest_expiry, &evicted),
            nullptr);
}

TEST(CounterPartition, EvictionShiftsEarlierSlotsSoPointersMustBeFoundAgain) {
  // key_of(0..3) share home slot 0 and occupy slots 0..3.  Keys 0..2 have
  // minute windows, key 3 an hour window.
  Table t(4, 6);
  uint32_t evicted;
  for (uint64_t i = 0; i < 3; ++i)
    ASSERT_NE(t.view().acquire(key_of(i), fixed(kMinute), kNow, &evicted), nullptr);
  ASSERT_NE(t.view().acquire(key_of(3), fixed(60 * kMinute), kNow, &evicted), nullptr);
  const int64_t later = kNow + 2 * kMinute;
  CounterSlot* first = t.view().acquire(key_of(3), fixed(60 * kMinute), later, &evicted);
  ASSERT_NE(first, nullptr);
  first->state.used = 7;
  // Acquiring a new key evicts keys 0..2 and shifts key 3 back towards its home.
  ASSERT_NE(t.view().acquire(key_of(9), fixed(kMinute), later, &evicted), nullptr);
  EXPECT_EQ(evicted, 3u);
  EXPECT_NE(first->key, key_of(3)) << "the earlier pointer no longer names key 3";
  CounterSlot* again = t.view().find(key_of(3));
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->state.used, 7);
}

TEST(CounterPartition, AcquiredSlotsOfEveryAlgorithmAreLiveAtNow) {
  // A full bucket is "expired" one microsecond after it was touched, never
  // at the instant acquire() returned it: a later acquire() at the same
  // `now` must not evict it.
  for (Algorithm a : {Algorithm::FixedWindow, Algorithm::SlidingWindow, Algorithm::TokenBucket,
                      Algorithm::Gcra}) {
    Table t(2, 3);
    uint32_t evicted;
    const LimitRule rule{10, kMinute, a};
    ASSERT_NE(t.view().acquire(key_of(0), rule, kNow, &evicted), nullptr);
    ASSERT_NE(t.view().acquire(key_of(1), rule, kNow, &evicted), nullptr);
    EXPECT_EQ(t.view().acquire(key_of(2), rule, kNow, &evicted), nullptr) << algorithm_name(a);
    EXPECT_EQ(evicted, 0u);
    EXPECT_NE(t.view().find(key_of(0)), nullptr);
    EXPECT_NE(t.view().find(key_of(1)), nullptr);
  }
}

TEST(CounterPartition, BucketExpiresWhenFullAgainAndTheHintSaysWhen) {
  Table t(1, 2);
  uint32_t evicted;
  const LimitRule rule{10, 10 * kMicrosPerSecond, Algorithm::TokenBucket};  // T = 1 s
  CounterSlot* s = t.view().acquire(key_of(0), rule, kNow, &evicted);
  ASSERT_NE(s, nullptr);
  consume(rule, &s->state, 3, kNow);  // TAT = now + 3 s
  // A scan sets the hint exactly.
  EXPECT_EQ(t.view().evict_expired(kNow), 0u);
  EXPECT_EQ(t.header.earliest_expiry, kNow + 3 * kMicrosPerSecond + 1);
  EXPECT_EQ(t.view().acquire(key_of(1), rule, kNow + 3 * kMicrosPerSecond, &evicted), nullptr);
  EXPECT_NE(t.view().acquire(key_of(1), rule, kNow + 3 * kMicrosPerSecond + 1, &evicted), nullptr);
  EXPECT_EQ(evicted, 1u);
}

TEST(CounterPartition, RefundLowersTheEvictionHint) {
  Table t(1, 2);
  uint32_t evicted;
  const LimitRule rule{10, 10 * kMicrosPerSecond, Algorithm::Gcra, 9};  // capacity 10, T = 1 s
  CounterSlot* s = t.view().acquire(key_of(0), rule, kNow, &evicted);
  ASSERT_NE(s, nullptr);
  const int64_t window = consume(rule, &s->state, 5, kNow);  // TAT = now + 5 s
  const uint16_t gen = CounterPartition::generation_of(*s);
  EXPECT_EQ(t.view().evict_expired(kNow), 0u);
  EXPECT_EQ(t.header.earliest_expiry, kNow + 5 * kMicrosPerSecond + 1);
  EXPECT_TRUE(t.view().refund(key_of(0), rule, 4, window, kNow, gen));  // TAT = now + 1 s
  EXPECT_EQ(t.header.earliest_expiry, kNow + kMicrosPerSecond + 1);
  EXPECT_NE(t.view().acquire(key_of(1), rule, kNow + 2 * kMicrosPerSecond, &evicted), nullptr);
  EXPECT_EQ(evicted, 1u);
  EXPECT_FALSE(t.view().refund(key_of(0), rule, 1, window, kNow, gen));
}

TEST(CounterPartition, ResetFreesTheSlotForEvictionAtOnce) {
  // A full partition of live counters: resetting one (reset_rate_limit)
  // makes it evictable immediately, so a new key fits.
  Table t(2, 3);
  uint32_t evicted;
  for (uint64_t i = 0; i < 2; ++i) {
    CounterSlot* s = t.view().acquire(key_of(i), fixed(kMinute), kNow, &evicted);
    ASSERT_NE(s, nullptr);
    consume(fixed(kMinute), &s->state, 7, kNow);
  }
  EXPECT_EQ(t.view().acquire(key_of(9), fixed(kMinute), kNow, &evicted), nullptr);
  EXPECT_TRUE(t.view().reset(key_of(1)));
  EXPECT_FALSE(t.view().reset(key_of(42)));
  EXPECT_EQ(t.view().find(key_of(1))->state.window_micros, 0);
  EXPECT_NE(t.view().acquire(key_of(9), fixed(kMinute), kNow, &evicted), nullptr);
  EXPECT_EQ(evicted, 1u);
  EXPECT_EQ(t.view().find(key_of(0))->state.used, 7);
}

TEST(CounterPartition, RefundOnlyAtTheChargesGeneration) {
  // reset_rate_limit between a charge and its refund: the fresh counter
  // does not hold the charge, so it gives nothing back (settle after reset).
  Table t(4, 6);
  uint32_t evicted;
  CounterSlot* s = t.view().acquire(key_of(0), fixed(kMinute), kNow, &evicted);
  ASSERT_NE(s, nullptr);
  const int64_t window = consume(fixed(kMinute), &s->state, 30, kNow);
  const uint16_t charged_at = CounterPartition::generation_of(*s);
  EXPECT_TRUE(t.view().reset(key_of(0)));
  s = t.view().acquire(key_of(0), fixed(kMinute), kNow, &evicted);
  consume(fixed(kMinute), &s->state, 100, kNow);
  EXPECT_NE(CounterPartition::generation_of(*s), charged_at);
  t.view().refund(key_of(0), fixed(kMinute), 30, window, kNow, charged_at);
  EXPECT_EQ(t.view().find(key_of(0))->state.used, 100);
  // At its own generation the refund is made, and the generation stays.
  const uint16_t now_gen = CounterPartition::generation_of(*t.view().find(key_of(0)));
  t.view().refund(key_of(0), fixed(kMinute), 30, window, kNow, now_gen);
  EXPECT_EQ(t.view().find(key_of(0))->state.used, 70);
  EXPECT_EQ(CounterPartition::generation_of(*t.view().find(key_of(0))), now_gen);
  // Another key made later has another generation.
  CounterSlot* other = t.view().acquire(key_of(1), fixed(kMinute), kNow, &evicted);
  EXPECT_NE(CounterPartition::generation_of(*other), now_gen);
  // A rebuilt counter (kRebuiltGeneration) refuses every recorded one, and
  // later generations skip past what was restored.
  CounterState rebuilt = advance(fixed(kMinute), CounterState{}, kNow);
  consume(fixed(kMinute), &rebuilt, 5, kNow);
  CounterPartition::set_generation(&rebuilt, kRebuiltGeneration);
  EXPECT_TRUE(t.view().store(key_of(2), rebuilt, kNow));
  for (uint16_t g : {charged_at, now_gen, uint16_t{0}})
    t.view().refund(key_of(2), fixed(kMinute), 5, window, kNow, g);
  EXPECT_EQ(t.view().find(key_of(2))->state.used, 5);
  CounterState saved = rebuilt;
  CounterPartition::set_generation(&saved, 900);
  EXPECT_TRUE(t.view().store(key_of(3), saved, kNow));
  EXPECT_TRUE(t.view().reset(key_of(3)));
  EXPECT_GT(CounterPartition::generation_of(*t.view().find(key_of(3))), 900);
}

TEST(CounterPartition, StoreOverwritesOrInsertsAndKeepsTheHintLow) {
  Table t(2, 3);
  uint32_t evicted;
  CounterState saved = advance(fixed(kMinute), CounterState{}, kNow);
  consume(fixed(kMinute), &saved, 42, kNow);
  EXPECT_TRUE(t.view().store(key_of(1), saved, kNow));
  EXPECT_EQ(t.view().find(key_of(1))->state.used, 42);
  EXPECT_EQ(t.header.earliest_expiry, saved.window_start + kMinute);
  saved.used = 43;
  EXPECT_TRUE(t.view().store(key_of(1), saved, kNow));
  EXPECT_EQ(t.view().count(), 1u);
  EXPECT_EQ(t.view().acquire(key_of(1), fixed(kMinute), kNow, &evicted)->state.used, 43);
  EXPECT_TRUE(t.view().store(key_of(2), saved, kNow));
  EXPECT_FALSE(t.view().store(key_of(3), saved, kNow));  // full of live counters
  // Once they expired, a store evicts them like acquire() does.
  EXPECT_TRUE(t.view().store(key_of(3), saved, kNow + 2 * kMinute));
}

TEST(CounterPartition, SlidingWindowLivesTwoWindows) {
  Table t(1, 2);
  uint32_t evicted;
  const LimitRule rule{10, kMinute, Algorithm::SlidingWindow};
  CounterSlot* s = t.view().acquire(key_of(0), rule, kNow, &evicted);
  ASSERT_NE(s, nullptr);
  const int64_t start = s->state.window_start;
  EXPECT_EQ(t.header.earliest_expiry, start + 2 * kMinute);
  EXPECT_EQ(t.view().acquire(key_of(1), rule, start + 2 * kMinute - 1, &evicted), nullptr);
  EXPECT_NE(t.view().acquire(key_of(1), rule, start + 2 * kMinute, &evicted), nullptr);
}

// Property: against a std::map model, random acquires and evictions keep
// every live key findable with its own state, whatever the probe clustering
// and the algorithm; the eviction hint never hides an expired slot.
TEST(Property, BehavesLikeAMap) {
  const uint64_t seed = 7;
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    const uint32_t capacity = 1 + static_cast<uint32_t>(rng() % 64);
    Table t(capacity, capacity + capacity / 3 + 1);
    std::map<uint64_t, CounterState> model;
    int64_t now = kNow;
    for (int step = 0; step < 2000; ++step) {
      now += static_cast<int64_t>(rng() % (kMinute / 4));
      const uint64_t id = rng() % 200;
      LimitRule rule;
      rule.limit = 1 + static_cast<int64_t>(rng() % 50);
      rule.window_micros = (1 + static_cast<int64_t>(rng() % 3)) * kMinute;
      rule.algorithm = static_cast<Algorithm>(id % kAlgorithms);
      // The model: expired entries may be dropped when the table is full.
      uint32_t evicted = 0;
      CounterSlot* s = t.view().acquire(key_of(id), rule, now, &evicted);
      if (evicted > 0) {
        for (auto it = model.begin(); it != model.end();)
          it = state_expired(it->second, now) ? model.erase(it) : std::next(it);
      }
      if (s == nullptr) {
        ASSERT_EQ(model.count(id), 0u);
        ASSERT_EQ(model.size(), capacity);
        for (auto& [k, st] : model) ASSERT_FALSE(state_expired(st, now)) << k;
        continue;
      }
      auto it = model.find(id);
      CounterState expected = advance(rule, it == model.end() ? CounterState{} : it->second, now);
      ASSERT_EQ(s->state.used, expected.used);
      ASSERT_EQ(s->state.window_start, expected.window_start);
      ASSERT_FALSE(state_expired(s->state, now));
      consume(rule, &s->state, static_cast<int64_t>(1 + rng() % 9), now);
      model[id] = s->state;
      ASSERT_EQ(t.view().count(), model.size());
      for (auto& [k, st] : model) {
        CounterSlot* f = t.view().find(key_of(k));
        ASSERT_NE(f, nullptr) << "lost key " << k;
        ASSERT_EQ(f->state.used, st.used);
        ASSERT_EQ(f->state.window_start, st.window_start);
        ASSERT_GE(expiry_of(st), t.header.earliest_expiry) << "hint above a slot's expiry";
      }
    }
  }
}

// ---- exhaustion policy: classes and owners ----

namespace {

Admission default_owner(uint8_t owner, uint32_t class_cap, uint32_t owner_cap) {
  Admission a;
  a.owner = owner;
  a.class_cap = class_cap;
  a.owner_cap = owner_cap;
  return a;
}

}  // namespace

TEST(CounterAdmission, OwnerCapStopsOneOwnerButNotAnother) {
  Table t(20, 27);
  uint32_t evicted;
  AcquireStatus status;
  const Admission attacker = default_owner(1, 16, 8);
  for (uint64_t i = 0; i < 8; ++i)
    ASSERT_NE(t.view().acquire(key_of(i), fixed(kMinute), kNow, attacker, &evicted, &status),
              nullptr);
  EXPECT_EQ(t.view().acquire(key_of(8), fixed(kMinute), kNow, attacker, &evicted, &status),
            nullptr);
  EXPECT_EQ(status, AcquireStatus::OwnerFull);
  // An existing key of the owner is still served.
  EXPECT_NE(t.view().acquire(key_of(3), fixed(kMinute), kNow, attacker, &evicted, &status),
            nullptr);
  // Another owner has its own tally.
  const Admission other = default_owner(2, 16, 8);
  EXPECT_NE(t.view().acquire(key_of(100), fixed(kMinute), kNow, other, &evicted, &status), nullptr);
  EXPECT_EQ(t.view().owner_count(1), 8u);
  EXPECT_EQ(t.view().owner_count(2), 1u);
  EXPECT_EQ(t.view().default_count(), 9u);
}

TEST(CounterAdmission, ClassCapKeepsARoomForConfiguredCounters) {
  Table t(10, 14);
  uint32_t evicted;
  AcquireStatus status;
  for (uint64_t i = 0; i < 7; ++i)
    ASSERT_NE(
        t.view().acquire(key_of(i), fixed(kMinute), kNow,
                         default_owner(static_cast<uint8_t>(1 + i), 7, 10), &evicted, &status),
        nullptr);
  EXPECT_EQ(
      t.view().acquire(key_of(7), fixed(kMinute), kNow, default_owner(9, 7, 10), &evicted, &status),
      nullptr);
  EXPECT_EQ(status, AcquireStatus::ClassFull);
  // Configured counters take the reserve up to the capacity ...
  for (uint64_t i = 20; i < 23; ++i)
    ASSERT_NE(t.view().acquire(key_of(i), fixed(kMinute), kNow, Admission{}, &evicted, &status),
              nullptr);
  EXPECT_EQ(t.view().acquire(key_of(23), fixed(kMinute), kNow, Admission{}, &evicted, &status),
            nullptr);
  EXPECT_EQ(status, AcquireStatus::TableFull);
}

TEST(CounterAdmission, EvictionGivesTheTallyBack) {
  Table t(10, 14);
  uint32_t evicted;
  AcquireStatus status;
  const Admission a = default_owner(5, 10, 3);
  for (uint64_t i = 0; i < 3; ++i)
    ASSERT_NE(t.view().acquire(key_of(i), fixed(kMinute), kNow, a, &evicted, &status), nullptr);
  EXPECT_EQ(t.view().acquire(key_of(3), fixed(kMinute), kNow, a, &evicted, &status), nullptr);
  // Two minutes later the windows have ended: the owner's slots are evicted
  // to make room for its new key, and its tally follows.
  const int64_t later = kNow + 2 * kMinute;
  EXPECT_NE(t.view().acquire(key_of(3), fixed(kMinute), later, a, &evicted, &status), nullptr);
  EXPECT_EQ(evicted, 3u);
  EXPECT_EQ(t.view().owner_count(5), 1u);
  EXPECT_EQ(t.view().default_count(), 1u);
}

TEST(CounterAdmission, OwnerSurvivesStateRewrites) {
  Table t(10, 14);
  uint32_t evicted;
  AcquireStatus status;
  CounterSlot* s = t.view().acquire(key_of(1), fixed(kMinute), kNow, default_owner(7, 10, 10),
                                    &evicted, &status);
  ASSERT_NE(s, nullptr);
  consume(fixed(kMinute), &s->state, 10, kNow);
  // A new window restarts the state (advance) and a reset clears it: the
  // owner stays.
  s = t.view().acquire(key_of(1), fixed(kMinute), kNow + 2 * kMinute, &evicted);
  EXPECT_EQ(CounterPartition::owner_of(*s), 7);
  t.view().reset(key_of(1));
  EXPECT_EQ(CounterPartition::owner_of(*t.view().find(key_of(1))), 7);
  t.view().refund(key_of(1), fixed(kMinute), 1, 0, kNow,
                  CounterPartition::generation_of(*t.view().find(key_of(1))));
  EXPECT_EQ(CounterPartition::owner_of(*t.view().find(key_of(1))), 7);
  EXPECT_EQ(t.view().owner_count(7), 1u);
}

TEST(CounterReclaim, SweepTagRemovesOnlyThatInstallation) {
  Table t(40, 54);
  uint32_t evicted;
  AcquireStatus status;
  for (uint64_t i = 0; i < 30; ++i) {
    const Hash128 k = with_tag(key_of(i), static_cast<uint16_t>(i % 3 + 1));
    ASSERT_NE(
        t.view().acquire(k, fixed(kMinute), kNow, default_owner(1, 40, 40), &evicted, &status),
        nullptr);
  }
  EXPECT_EQ(t.view().sweep_tag(2), 10u);
  EXPECT_EQ(t.view().count(), 20u);
  EXPECT_EQ(t.view().default_count(), 20u);
  EXPECT_EQ(t.view().owner_count(1), 20u);
  for (uint64_t i = 0; i < 30; ++i) {
    const Hash128 k = with_tag(key_of(i), static_cast<uint16_t>(i % 3 + 1));
    EXPECT_EQ(t.view().find(k) != nullptr, i % 3 + 1 != 2) << i;
  }
}

TEST(CounterReclaim, DeadTagsAreEvictedWhenRoomIsNeeded) {
  std::vector<uint8_t> live(65536, 1);
  PartitionHeader header;
  std::vector<CounterSlot> slots(14);
  CounterPartition::initialize(&header, slots.data(), 10, 14);
  CounterPartition p(&header, slots.data(), live.data());
  uint32_t evicted;
  // Four hour-long counters of tag 9, five of tag 8, one minute-long of tag 8.
  for (uint64_t i = 0; i < 10; ++i)
    ASSERT_NE(p.acquire(with_tag(key_of(i), i < 4 ? 9 : 8), fixed(i == 9 ? kMinute : 60 * kMinute),
                        kNow, &evicted),
              nullptr);
  EXPECT_EQ(p.acquire(with_tag(key_of(50), 8), fixed(60 * kMinute), kNow, &evicted), nullptr);
  live[9] = 0;  // the installation of tag 9 was dropped
  // Its live counters go at the next eviction scan, which runs once some
  // counter can have expired (here the minute-long one).
  const int64_t later = kNow + 2 * kMinute;
  ASSERT_NE(p.acquire(with_tag(key_of(50), 8), fixed(60 * kMinute), later, &evicted), nullptr);
  EXPECT_EQ(evicted, 5u);
  for (uint64_t i = 0; i < 4; ++i) EXPECT_EQ(p.find(with_tag(key_of(i), 9)), nullptr);
}
