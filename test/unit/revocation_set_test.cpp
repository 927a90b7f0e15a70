#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "rate_limiter/core/revocation_set.hpp"

using namespace rate_limiter::core;

namespace {

struct Set {
  RevocationSetHeader header;
  std::vector<RevocationSlot> slots;
  explicit Set(uint32_t capacity) : slots(revocation_slots_for(capacity)) {
    RevocationSet::initialize(&header, slots.data(), capacity, static_cast<uint32_t>(slots.size()));
  }
  RevocationSet view() { return RevocationSet(&header, slots.data()); }
};

Hash128 key_of(uint64_t i) {
  // Clustered homes (consecutive lo values), to exercise probe runs,
  // wrap-around and backward shifts.
  return Hash128{i * 0x9e3779b97f4a7c15ULL + 1, i << 58};
}

}  // namespace

TEST(RevocationKey, DependsOnInstallationAndToken) {
  const SipKey k{1, 2};
  EXPECT_EQ(revocation_key(k, 7, "abc"), revocation_key(k, 7, "abc"));
  EXPECT_NE(revocation_key(k, 7, "abc"), revocation_key(k, 8, "abc"));
  EXPECT_NE(revocation_key(k, 7, "abc"), revocation_key(k, 7, "abd"));
  EXPECT_NE(revocation_key(k, 7, "abc"), revocation_key(SipKey{1, 3}, 7, "abc"));
  // Not the scope hash of a user with the same bytes.
  EXPECT_NE(revocation_key(k, 7, "abc"), scope_hash(k, 7, ScopeKind::User, "abc", {}));
  EXPECT_FALSE(revocation_key(k, 0, "").is_zero());
}

TEST(RevocationSet, InsertContainsErase) {
  Set s(4);
  EXPECT_EQ(s.view().insert(key_of(1), 10), InsertResult::Inserted);
  EXPECT_EQ(s.view().insert(key_of(1), 10), InsertResult::Present);
  EXPECT_TRUE(s.view().contains(key_of(1)));
  EXPECT_FALSE(s.view().contains(key_of(2)));
  EXPECT_TRUE(s.view().erase(key_of(1)));
  EXPECT_FALSE(s.view().erase(key_of(1)));
  EXPECT_FALSE(s.view().contains(key_of(1)));
  EXPECT_EQ(s.view().count(), 0u);
}

TEST(RevocationSet, FullRefusesNewMembersButKeepsOld) {
  Set s(3);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(s.view().insert(key_of(i), 1), InsertResult::Inserted);
  EXPECT_EQ(s.view().insert(key_of(9), 1), InsertResult::Full);
  EXPECT_EQ(s.view().insert(key_of(2), 1), InsertResult::Present);
  EXPECT_FALSE(s.view().contains(key_of(9)));
  for (uint64_t i = 0; i < 3; ++i) EXPECT_TRUE(s.view().contains(key_of(i)));
  EXPECT_TRUE(s.view().erase(key_of(0)));
  EXPECT_EQ(s.view().insert(key_of(9), 1), InsertResult::Inserted);
}

TEST(RevocationSet, EraseInstallationKeepsOthers) {
  Set s(40);
  for (uint64_t i = 0; i < 40; ++i) s.view().insert(key_of(i), i % 3);
  EXPECT_EQ(s.view().erase_installation(1), 13u);
  EXPECT_EQ(s.view().count(), 27u);
  for (uint64_t i = 0; i < 40; ++i) EXPECT_EQ(s.view().contains(key_of(i)), i % 3 != 1) << i;
  EXPECT_EQ(s.view().erase_installation(1), 0u);
}

// Random operations against a std::map model, on a small clustered table,
// including whole-installation erasure.
TEST(RevocationSet, MatchesAModel) {
  std::mt19937_64 rng(20240611);
  for (int round = 0; round < 50; ++round) {
    const uint32_t capacity = 1 + rng() % 40;
    Set s(capacity);
    std::map<uint64_t, uint64_t> model;  // key index -> installation
    for (int op = 0; op < 2000; ++op) {
      const uint64_t i = rng() % 64;
      const uint64_t inst = 1 + rng() % 3;
      switch (rng() % 7) {
        case 0:
        case 1:
        case 2: {
          const InsertResult r = s.view().insert(key_of(i), inst);
          if (model.count(i)) {
            ASSERT_EQ(r, InsertResult::Present);
          } else if (model.size() >= capacity) {
            ASSERT_EQ(r, InsertResult::Full);
          } else {
            ASSERT_EQ(r, InsertResult::Inserted);
            model[i] = inst;
          }
          break;
        }
        case 3:
        case 4:
        case 5:
          ASSERT_EQ(s.view().erase(key_of(i)), model.erase(i) == 1);
          break;
        case 6: {
          uint32_t expected = 0;
          for (auto it = model.begin(); it != model.end();) {
            if (it->second == inst) {
              it = model.erase(it);
              ++expected;
            } else {
              ++it;
            }
          }
          ASSERT_EQ(s.view().erase_installation(inst), expected);
          break;
        }
      }
      ASSERT_EQ(s.view().count(), model.size());
      for (uint64_t k = 0; k < 64; ++k)
        ASSERT_EQ(s.view().contains(key_of(k)), model.count(k) == 1);
    }
  }
}
