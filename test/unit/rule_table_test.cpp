#include "rate_limiter/core/rule_table.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "rate_limiter/core/scope_key.hpp"

using namespace rate_limiter::core;

namespace {

struct Table {
  RulePartitionHeader header;
  std::vector<RuleSlot> slots;
  Table(uint32_t capacity, uint32_t nslots) : slots(nslots) {
    RulePartition::initialize(&header, slots.data(), capacity, nslots);
  }
  RulePartition view() { return RulePartition(&header, slots.data()); }
};

Hash128 key_of(uint64_t i, uint16_t tag = 1) {
  // Clustered homes (lo << 58) exercise probe runs and backward shifts.
  return with_tag(Hash128{i * 0x9e3779b97f4a7c15ULL, (i % 7) << 58 | i}, tag);
}

RuleRecord record(int64_t limit) {
  RuleRecord r;
  r.limit = limit;
  r.window_micros = kMicrosPerSecond;
  return r;
}

}  // namespace

TEST(RuleTable, UpsertFindErase) {
  Table t(8, 11);
  EXPECT_EQ(t.view().upsert(key_of(1), record(10)), RuleWrite::Inserted);
  EXPECT_EQ(t.view().upsert(key_of(1), record(20)), RuleWrite::Updated);
  ASSERT_NE(t.view().find(key_of(1)), nullptr);
  EXPECT_EQ(t.view().find(key_of(1))->record.limit, 20);
  EXPECT_TRUE(t.view().erase(key_of(1), false));
  EXPECT_EQ(t.view().find(key_of(1)), nullptr);
  EXPECT_FALSE(t.view().erase(key_of(1), false));
}

TEST(RuleTable, FullTableRefusesNewKeysButUpdatesOldOnes) {
  Table t(4, 6);
  for (uint64_t i = 0; i < 4; ++i)
    ASSERT_EQ(t.view().upsert(key_of(i), record(1)), RuleWrite::Inserted);
  EXPECT_EQ(t.view().upsert(key_of(9), record(1)), RuleWrite::Full);
  EXPECT_EQ(t.view().insert_if_absent(key_of(9), record(1)), RuleWrite::Full);
  EXPECT_EQ(t.view().upsert(key_of(2), record(5)), RuleWrite::Updated);
}

TEST(RuleTable, TombstonesKeepTheLoaderFromResurrectingADeletedRule) {
  Table t(8, 11);
  // A load is under way: the commit of a delete leaves a tombstone, the
  // commit of an update writes the new value.
  t.view().erase(key_of(1), true);
  t.view().upsert(key_of(2), record(99));
  // The loader's snapshot still had both rows with their old values.
  EXPECT_EQ(t.view().insert_if_absent(key_of(1), record(10)), RuleWrite::Present);
  EXPECT_EQ(t.view().insert_if_absent(key_of(2), record(10)), RuleWrite::Present);
  EXPECT_EQ(t.view().insert_if_absent(key_of(3), record(10)), RuleWrite::Inserted);
  EXPECT_TRUE(t.view().find(key_of(1))->record.deleted);
  EXPECT_EQ(t.view().find(key_of(2))->record.limit, 99);
  EXPECT_EQ(t.view().sweep_tombstones(1), 1u);
  EXPECT_EQ(t.view().find(key_of(1)), nullptr);
  EXPECT_EQ(t.view().live(), 2u);
  // A rule re-created over a tombstone is live again.
  t.view().erase(key_of(3), true);
  EXPECT_EQ(t.view().upsert(key_of(3), record(7)), RuleWrite::Inserted);
  EXPECT_FALSE(t.view().find(key_of(3))->record.deleted);
  EXPECT_EQ(t.view().live(), 2u);
}

TEST(RuleTable, SweepTagLeavesOtherInstallations) {
  Table t(64, 86);
  for (uint64_t i = 0; i < 60; ++i)
    t.view().upsert(key_of(i, static_cast<uint16_t>(1 + i % 4)), record(1));
  EXPECT_EQ(t.view().sweep_tag(3), 15u);
  EXPECT_EQ(t.view().count(), 45u);
  for (uint64_t i = 0; i < 60; ++i)
    EXPECT_EQ(t.view().find(key_of(i, static_cast<uint16_t>(1 + i % 4))) != nullptr, 1 + i % 4 != 3)
        << i;
}

// Seeded random operations against a std::map: lookups agree after every
// step, through inserts, updates, deletes, tombstones and sweeps.
TEST(RuleTable, MatchesAMapModel) {
  std::mt19937_64 rng(20261202);
  Table t(200, 267);
  std::map<std::pair<uint64_t, uint64_t>, std::pair<int64_t, bool>>
      model;  // key -> (limit, deleted)
  auto mk = [](const Hash128& k) { return std::make_pair(k.hi, k.lo); };
  for (int step = 0; step < 200000; ++step) {
    const Hash128 k = key_of(rng() % 300, static_cast<uint16_t>(1 + rng() % 2));
    const int op = static_cast<int>(rng() % 100);
    const int64_t limit = static_cast<int64_t>(rng() % 1000) + 1;
    auto it = model.find(mk(k));
    if (op < 40) {
      const RuleWrite w = t.view().upsert(k, record(limit));
      if (it != model.end()) {
        EXPECT_EQ(w, it->second.second ? RuleWrite::Inserted : RuleWrite::Updated);
        it->second = {limit, false};
      } else if (model.size() < 200) {
        EXPECT_EQ(w, RuleWrite::Inserted);
        model[mk(k)] = {limit, false};
      } else {
        EXPECT_EQ(w, RuleWrite::Full);
      }
    } else if (op < 55) {
      const RuleWrite w = t.view().insert_if_absent(k, record(limit));
      if (it != model.end()) {
        EXPECT_EQ(w, RuleWrite::Present);
      } else if (model.size() < 200) {
        EXPECT_EQ(w, RuleWrite::Inserted);
        model[mk(k)] = {limit, false};
      } else {
        EXPECT_EQ(w, RuleWrite::Full);
      }
    } else if (op < 75) {
      const bool tomb = op < 65;
      const bool removed = t.view().erase(k, tomb);
      EXPECT_EQ(removed, it != model.end() && !it->second.second);
      if (tomb) {
        if (it != model.end())
          it->second.second = true;
        else if (model.size() < 200)
          model[mk(k)] = {0, true};
      } else if (it != model.end()) {
        model.erase(it);
      }
    } else if (op < 76) {
      const uint16_t tag = static_cast<uint16_t>(1 + rng() % 2);
      t.view().sweep_tombstones(tag);
      for (auto m = model.begin(); m != model.end();)
        m = (m->second.second && (m->first.first & kTagMask) == tag) ? model.erase(m)
                                                                     : std::next(m);
    } else {
      const RuleSlot* s = t.view().find(k);
      ASSERT_EQ(s != nullptr, it != model.end());
      if (s != nullptr) {
        EXPECT_EQ(s->record.deleted != 0, it->second.second);
        if (!it->second.second) {
          EXPECT_EQ(s->record.limit, it->second.first);
        }
      }
    }
    ASSERT_EQ(t.view().count(), model.size());
  }
}
