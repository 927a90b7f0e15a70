#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "rate_limiter/core/lease_table.hpp"

using namespace rate_limiter::core;

namespace {

struct Table {
  std::vector<uint64_t> memory;
  explicit Table(uint32_t capacity) : memory(LeaseTable::bytes_for(capacity) / 8 + 1) {
    LeaseTable::initialize(memory.data(), capacity);
  }
  LeaseTable view() { return LeaseTable(memory.data()); }
};

Hash128 scope_of(uint64_t i) { return Hash128{0x1234, i + 1}; }
Hash128 grant_of(uint64_t i) { return Hash128{7, i + 1}; }

}  // namespace

TEST(LeaseTable, CountsAndReleasesByGrant) {
  Table t(8);
  LeaseTable lt = t.view();
  const Hash128 s = scope_of(1);
  EXPECT_TRUE(lt.room(s, 2, 0).ok);
  const LeaseHandle a = lt.take(s, 0, 100, 1);
  const LeaseHandle b = lt.take(s, 0, 200, 1);
  ASSERT_TRUE(lt.bind(a, grant_of(1)));
  ASSERT_TRUE(lt.bind(b, grant_of(2)));
  EXPECT_FALSE(lt.bind(b, grant_of(3)));  // already bound
  LeaseRoom r = lt.room(s, 2, 50);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.in_flight, 2);
  EXPECT_EQ(r.retry_at, 100);
  EXPECT_EQ(lt.release_grant(grant_of(1)), 1);
  EXPECT_EQ(lt.release_grant(grant_of(1)), 0);
  r = lt.room(s, 2, 50);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.in_flight, 1);
  EXPECT_EQ(lt.used(), 1u);
}

TEST(LeaseTable, ExpiryFreesTheSlotAtTheTimeout) {
  Table t(4);
  LeaseTable lt = t.view();
  const Hash128 s = scope_of(2);
  lt.take(s, 0, 100, 1);
  lt.take(s, 10, 150, 1);
  EXPECT_FALSE(lt.room(s, 2, 99).ok);
  EXPECT_EQ(lt.room(s, 2, 99).retry_at, 100);
  const LeaseRoom r = lt.room(s, 2, 100);  // the first expires exactly now
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.in_flight, 1);
  lt.take(s, 100, 300, 1);
  EXPECT_EQ(lt.room(s, 2, 120).retry_at, 150);  // recomputed by the sweep
  EXPECT_EQ(lt.room(s, 0, 1000).in_flight, 0);  // a monitoring sweep
  EXPECT_EQ(lt.used(), 0u);
}

TEST(LeaseTable, ReleaseOwnerAndStaleHandles) {
  Table t(4);
  LeaseTable lt = t.view();
  const LeaseHandle a = lt.take(scope_of(1), 0, 100, 5);
  lt.take(scope_of(2), 0, 100, 6);
  lt.take(scope_of(1), 0, 100, 5);
  lt.take(scope_of(9), 0, 100, 8, 0, /*group=*/3);
  EXPECT_EQ(lt.release_group(3), 1);
  EXPECT_EQ(lt.release_group(3), 0);
  EXPECT_EQ(lt.release_owner(5), 2);
  EXPECT_EQ(lt.in_flight(scope_of(1)), 0);
  EXPECT_EQ(lt.in_flight(scope_of(2)), 1);
  EXPECT_FALSE(lt.release(a));                            // ended already
  const LeaseHandle c = lt.take(scope_of(3), 0, 100, 7);  // may reuse a's index
  EXPECT_FALSE(lt.bind(a, grant_of(1)));
  EXPECT_TRUE(lt.release(c));
  EXPECT_EQ(lt.used(), 1u);
}

TEST(LeaseTable, FullTableTakesNothing) {
  Table t(2);
  LeaseTable lt = t.view();
  EXPECT_GE(lt.take(scope_of(1), 0, 10, 1).index, 0);
  EXPECT_GE(lt.take(scope_of(2), 0, 10, 1).index, 0);
  EXPECT_EQ(lt.free_count(), 0u);
  EXPECT_LT(lt.take(scope_of(3), 0, 10, 1).index, 0);
}

// Leases of scopes that never reach their limit are never swept by room():
// a full table must still free its expired ones.
TEST(LeaseTable, AFullTableOfExpiredLeasesMakesRoom) {
  Table t(3);
  LeaseTable lt = t.view();
  lt.take(scope_of(1), 0, 10, 1);
  lt.take(scope_of(2), 0, 20, 1);
  lt.take(scope_of(3), 0, 30, 1);
  int64_t retry_at = 0;
  EXPECT_FALSE(lt.make_room(1, 9, &retry_at));
  EXPECT_EQ(retry_at, 10);
  EXPECT_TRUE(lt.make_room(1, 20, &retry_at));  // two expired, swept
  EXPECT_EQ(lt.used(), 1u);
  EXPECT_EQ(lt.in_flight(scope_of(1)), 0);
  EXPECT_EQ(lt.in_flight(scope_of(3)), 1);
  lt.take(scope_of(4), 20, 100, 1);
  lt.take(scope_of(5), 20, 25, 1);
  EXPECT_FALSE(lt.make_room(1, 24, &retry_at));
  EXPECT_EQ(retry_at, 25);  // the table's earliest, kept exact
  EXPECT_TRUE(lt.make_room(2, 30, &retry_at));
  EXPECT_EQ(lt.used(), 1u);
}

// Against a plain model: random takes, binds, releases, expiries and owner
// exits over a few scopes; the counts agree after every step.
TEST(LeaseTable, AgreesWithAModel) {
  constexpr uint32_t kCapacity = 64;
  Table t(kCapacity);
  LeaseTable lt = t.view();
  struct M {
    int scope;
    int64_t expires;
    int owner;
    int64_t grant;  // -1: unbound
    LeaseHandle h;
  };
  std::vector<M> model;
  std::mt19937_64 rng(42);
  int64_t now = 0;
  int64_t next_grant = 0;
  for (int step = 0; step < 200000; ++step) {
    now += static_cast<int64_t>(rng() % 5);
    const int scope = static_cast<int>(rng() % 6);
    const int32_t max = 1 + static_cast<int32_t>(rng() % 12);
    switch (rng() % 6) {
      case 0:
      case 1: {  // admit and take
        const LeaseRoom r = lt.room(scope_of(scope), max, now);
        int live = 0;
        for (const M& m : model) live += m.scope == scope && m.expires > now;
        int held = 0;
        for (const M& m : model) held += m.scope == scope;
        // The table counts expired leases until it sweeps; room() sweeps
        // whenever they could change the answer.
        ASSERT_EQ(r.ok, live < max) << "step " << step;
        if (!r.ok) {
          ASSERT_EQ(r.in_flight, live);
          int64_t earliest = INT64_MAX;
          for (const M& m : model)
            if (m.scope == scope && m.expires > now) earliest = std::min(earliest, m.expires);
          ASSERT_EQ(r.retry_at, earliest);
        } else {
          ASSERT_GE(r.in_flight, live);
          ASSERT_LE(r.in_flight, held);
        }
        if (r.in_flight < held) {  // swept: drop the expired from the model
          model.erase(
              std::remove_if(model.begin(), model.end(),
                             [&](const M& m) { return m.scope == scope && m.expires <= now; }),
              model.end());
        }
        if (r.ok && lt.free_count() > 0) {
          M m{scope,
              now + 1 + static_cast<int64_t>(rng() % 200),
              static_cast<int>(rng() % 4),
              -1,
              {}};
          m.h = lt.take(scope_of(scope), now, m.expires, m.owner);
          ASSERT_GE(m.h.index, 0);
          model.push_back(m);
        }
        break;
      }
      case 2: {  // bind an unbound one
        for (M& m : model)
          if (m.grant < 0) {
            m.grant = next_grant++;
            ASSERT_TRUE(lt.bind(m.h, grant_of(m.grant)));
            break;
          }
        break;
      }
      case 3: {  // settle a random bound grant
        if (model.empty()) break;
        M& m = model[rng() % model.size()];
        if (m.grant < 0) {
          ASSERT_TRUE(lt.release(m.h));
        } else {
          ASSERT_EQ(lt.release_grant(grant_of(m.grant)), 1);
        }
        model.erase(model.begin() + (&m - model.data()));
        break;
      }
      case 4: {  // an owner exits
        const int owner = static_cast<int>(rng() % 4);
        int n = 0;
        for (const M& m : model) n += m.owner == owner;
        ASSERT_EQ(lt.release_owner(owner), n);
        model.erase(std::remove_if(model.begin(), model.end(),
                                   [&](const M& m) { return m.owner == owner; }),
                    model.end());
        break;
      }
      default:
        break;
    }
    ASSERT_EQ(lt.used(), model.size());
    int held = 0;
    for (const M& m : model) held += m.scope == scope;
    ASSERT_EQ(lt.in_flight(scope_of(scope)), held);
  }
}
